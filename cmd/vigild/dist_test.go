package main

import (
	"os"
	"strings"
	"testing"

	"vigil/internal/nodeconf"
)

// The example configuration the package installs must be one vigild accepts.
func TestDistExampleConfig(t *testing.T) {
	cfg, err := nodeconf.Load("dist/node.yaml")
	if err != nil {
		t.Fatalf("the packaged example configuration is invalid: %v", err)
	}
	if cfg.KeyFile != "/etc/vigil/cluster.key" || cfg.DataDir != "/var/lib/vigil" {
		t.Errorf("example key_file %q, data_dir %q: want the paths the package and its unit use", cfg.KeyFile, cfg.DataDir)
	}
}

// The unit starts the binary the package installs, with the configuration path the
// postinst note and the example name.
func TestDistUnit(t *testing.T) {
	b, err := os.ReadFile("dist/vigild.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	for _, want := range []string{
		"Type=notify",
		"ExecStart=/usr/sbin/vigild --config /etc/vigil/node.yaml $VIGILD_OPTS",
		"ExecStartPre=/usr/sbin/vigild --config /etc/vigil/node.yaml --check",
		"EnvironmentFile=-/etc/default/vigild",
		"RuntimeDirectory=vigil",
		"StateDirectory=vigil",
	} {
		if !strings.Contains(unit, want+"\n") {
			t.Errorf("vigild.service lacks the line %q", want)
		}
	}
}
