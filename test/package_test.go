package test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The node package, as an administrator meets it: `make deb` builds it, dpkg installs it (into a
// scratch root, with the maintainer scripts run outside a chroot and $DPKG_ROOT set, so the
// machine running the test is not touched), the installed binaries run and accept the example
// configuration, a reinstall counts as an upgrade, remove keeps the configuration and the
// cluster database, purge removes the package's files and the database and leaves the
// administrator's files alone.

func TestNodePackage(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: dpkg installs the package into a scratch root")
	}
	for _, tool := range []string{"dpkg", "dpkg-deb", "make"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (Debian): %v", tool, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, name, args...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	out := t.TempDir()
	const version, debVersion = "v9.9.9-test", "9.9.9~test1"
	deb := strings.TrimSpace(run("make", "-C", "..", "-s", "deb", "BIN="+out, "VERSION="+version, "DEB_VERSION="+debVersion))
	if filepath.Dir(deb) != out || !strings.HasPrefix(filepath.Base(deb), "vigil_"+debVersion+"_") {
		t.Fatalf("make deb printed %q: want a vigil_%s_ARCH.deb in %s", deb, debVersion, out)
	}
	fields := run("dpkg-deb", "--field", deb, "Package", "Version", "Architecture")
	for _, want := range []string{"Package: vigil", "Version: " + debVersion} {
		if !strings.Contains(fields, want+"\n") {
			t.Errorf("control fields lack %q:\n%s", want, fields)
		}
	}

	root := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	dpkg := func(args ...string) string {
		t.Helper()
		return run("dpkg", append([]string{"--root=" + root, "--force-script-chrootless", "--log=/dev/null"}, args...)...)
	}
	at := func(p string) string { return filepath.Join(root, p) }
	exists := func(p string) bool { _, err := os.Lstat(at(p)); return err == nil }

	note := dpkg("-i", deb)
	if !strings.Contains(note, "systemctl enable --now vigild") {
		t.Errorf("first install: the postinst should say what to do next:\n%s", note)
	}
	for p, mode := range map[string]os.FileMode{
		"usr/sbin/vigild":                        0o755,
		"usr/bin/vigil":                          0o755,
		"usr/lib/systemd/system/vigild.service":  0o644,
		"etc/default/vigild":                     0o644,
		"usr/share/doc/vigil/examples/node.yaml": 0o644,
		"usr/share/doc/vigil/README.md":          0o644,
		"var/lib/vigil":                          os.ModeDir | 0o700,
		"etc/vigil":                              os.ModeDir | 0o755,
	} {
		fi, err := os.Stat(at(p))
		if err != nil {
			t.Errorf("installed: %v", err)
			continue
		}
		if fi.Mode()&(os.ModeDir|os.ModePerm) != mode {
			t.Errorf("installed /%s has mode %v, want %v", p, fi.Mode(), mode)
		}
	}
	if v := run(at("usr/sbin/vigild"), "--version"); !strings.Contains(v, version) {
		t.Errorf("vigild --version = %q, want it to name %s", v, version)
	}
	if v := run(at("usr/bin/vigil"), "version"); !strings.Contains(v, version) {
		t.Errorf("vigil version = %q, want it to name %s", v, version)
	}

	// The administrator's steps: a key, the example as this node's configuration, --check
	// (the unit's ExecStartPre).
	key := at("etc/vigil/cluster.key")
	run(at("usr/bin/vigil"), "keygen", key)
	example, err := os.ReadFile(at("usr/share/doc/vigil/examples/node.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	conf := strings.NewReplacer("/etc/vigil/cluster.key", key, "/var/lib/vigil", at("var/lib/vigil")).Replace(string(example))
	if err := os.WriteFile(at("etc/vigil/node.yaml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if v := run(at("usr/sbin/vigild"), "--config", at("etc/vigil/node.yaml"), "--check"); !strings.Contains(v, "configuration valid") {
		t.Errorf("vigild --check on the example: %q", v)
	}
	if err := os.WriteFile(at("var/lib/vigil/marker"), []byte("db"), 0o600); err != nil {
		t.Fatal(err)
	}

	if note := dpkg("-i", deb); !strings.Contains(note, "upgraded") {
		t.Errorf("reinstall: the postinst should say the running daemon keeps the old version:\n%s", note)
	}

	dpkg("-r", "vigil")
	for _, p := range []string{"usr/sbin/vigild", "usr/bin/vigil", "usr/lib/systemd/system/vigild.service"} {
		if exists(p) {
			t.Errorf("after remove /%s is still there", p)
		}
	}
	for _, p := range []string{"etc/default/vigild", "var/lib/vigil/marker", "etc/vigil/node.yaml", "etc/vigil/cluster.key"} {
		if !exists(p) {
			t.Errorf("remove took /%s away: it must keep configuration and data", p)
		}
	}

	dpkg("-P", "vigil")
	for _, p := range []string{"etc/default/vigild", "var/lib/vigil"} {
		if exists(p) {
			t.Errorf("after purge /%s is still there", p)
		}
	}
	for _, p := range []string{"etc/vigil/node.yaml", "etc/vigil/cluster.key"} {
		if !exists(p) {
			t.Errorf("purge took the administrator's /%s", p)
		}
	}
}
