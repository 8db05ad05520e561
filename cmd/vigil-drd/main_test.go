package main

import (
	"net"
	"os"
	"path/filepath"
	"testing"
)

// TestRemoveStaleSocket: a socket left behind is removed; a file at the socket path (a
// mistyped flag) is refused and kept.
func TestRemoveStaleSocket(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "data")
	if err := os.WriteFile(file, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := removeStaleSocket(file); err == nil {
		t.Error("a regular file at the socket path accepted")
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "keep me" {
		t.Errorf("regular file removed or changed: %q, %v", b, err)
	}
	sock := filepath.Join(dir, "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	if err := removeStaleSocket(sock); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("stale socket still there: %v", err)
	}
	if err := removeStaleSocket(filepath.Join(dir, "none")); err != nil {
		t.Errorf("missing path: %v", err)
	}
}
