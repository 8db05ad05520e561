package sdnotify

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	addr := &net.UnixAddr{Name: name, Net: "unixgram"}
	c, err := net.ListenUnixgram("unixgram", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func receive(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 256)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

func TestNotifyPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	c := listen(t, path)
	sent, err := notify(path, Ready)
	if err != nil || !sent {
		t.Fatalf("notify = %v, %v; want true, nil", sent, err)
	}
	if got := receive(t, c); got != Ready {
		t.Fatalf("service manager got %q, want %q", got, Ready)
	}
}

func TestNotifyAbstract(t *testing.T) {
	name := "vigil-sdnotify-test-" + strings.ReplaceAll(t.TempDir(), "/", "-")
	c := listen(t, "\x00"+name)
	if sent, err := notify("@"+name, Stopping); err != nil || !sent {
		t.Fatalf("notify = %v, %v; want true, nil", sent, err)
	}
	if got := receive(t, c); got != Stopping {
		t.Fatalf("service manager got %q, want %q", got, Stopping)
	}
}

func TestNotifyUnsetOrBad(t *testing.T) {
	if sent, err := notify("", Ready); sent || err != nil {
		t.Fatalf("unset: notify = %v, %v; want false, nil", sent, err)
	}
	if _, err := notify("relative/sock", Ready); err == nil || !strings.Contains(err.Error(), "NOTIFY_SOCKET") {
		t.Fatalf("relative path: err = %v, want one naming NOTIFY_SOCKET", err)
	}
	if _, err := notify(filepath.Join(t.TempDir(), "nobody"), Ready); err == nil {
		t.Fatal("no listener: want an error")
	}
}
