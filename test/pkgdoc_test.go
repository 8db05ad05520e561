package test

import (
	"go/build"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// repoRoot finds the directory holding go.mod above the test's working directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// undocumented returns the Go packages under root (relative paths) that have no package doc
// comment. A library's comment must start "Package <name> "; a command's "Command <dir> ".
func undocumented(root string) ([]string, error) {
	var missing []string
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		name := d.Name()
		if path != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata") {
			return filepath.SkipDir
		}
		ctx := build.Default
		ctx.GOOS, ctx.GOARCH = "linux", "amd64"
		pkg, err := ctx.ImportDir(path, build.ImportComment)
		if err != nil {
			if _, ok := err.(*build.NoGoError); ok {
				return nil
			}
			return err
		}
		want := "Package " + pkg.Name + " "
		if pkg.Name == "main" {
			want = "Command " + filepath.Base(path) + " "
		}
		if !strings.HasPrefix(pkg.Doc, want) {
			rel, _ := filepath.Rel(root, path)
			missing = append(missing, rel)
		}
		return nil
	})
	return missing, err
}

func TestEveryPackageHasDoc(t *testing.T) {
	root := repoRoot(t)
	missing, err := undocumented(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range missing {
		t.Errorf("package %s has no doc comment saying its job (\"Package name ...\" or \"Command name ...\")", p)
	}
}

func TestTopLevelLayout(t *testing.T) {
	root := repoRoot(t)
	for _, dir := range []string{"bpf", "dataplane", "heartbeat", "control", "drd", "cmd/vigild", "cmd/vigil", "bench", "test", "internal"} {
		if fi, err := os.Stat(filepath.Join(root, dir)); err != nil || !fi.IsDir() {
			t.Errorf("top-level folder %s is missing", dir)
		}
	}
}

// The checker itself must catch a package without a doc comment.
func TestUndocumentedIsCaught(t *testing.T) {
	root := t.TempDir()
	write := func(rel, text string) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("good/a.go", "// Package good does one thing.\npackage good\n")
	write("bad/a.go", "package bad\n")
	write("wrong/a.go", "// Helpers for things.\npackage wrong\n")
	write("cmd/tool/main.go", "// Command tool runs.\npackage main\n")
	write("cmd/anon/main.go", "package main\n")
	missing, err := undocumented(root)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(missing, ",")
	if want := "bad,cmd/anon,wrong"; got != want {
		t.Errorf("undocumented = %q, want %q", got, want)
	}
}
