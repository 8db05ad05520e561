// Package sdnotify tells a service manager about the daemon's state with the sd_notify
// protocol: one datagram of "KEY=VALUE" lines to the unix socket named by $NOTIFY_SOCKET.
// systemd starts vigild with Type=notify and waits for READY=1 before it calls the unit
// started, so `systemctl start vigild` returns once the admin socket answers.
package sdnotify

import (
	"fmt"
	"net"
	"os"
	"strings"
)

// Ready and Stopping are the states vigild reports.
const (
	Ready    = "READY=1"
	Stopping = "STOPPING=1"
)

// Notify sends state to the socket named by $NOTIFY_SOCKET. It reports false, and does
// nothing, when the variable is unset (not started by a service manager). A name starting
// with '@' is an abstract socket.
func Notify(state string) (bool, error) {
	return notify(os.Getenv("NOTIFY_SOCKET"), state)
}

func notify(path, state string) (bool, error) {
	if path == "" {
		return false, nil
	}
	if !strings.HasPrefix(path, "/") && !strings.HasPrefix(path, "@") {
		return false, fmt.Errorf("NOTIFY_SOCKET=%q: neither an absolute path nor an abstract name", path)
	}
	addr := &net.UnixAddr{Name: path, Net: "unixgram"}
	if path[0] == '@' {
		addr.Name = "\x00" + path[1:]
	}
	c, err := net.DialUnix("unixgram", nil, addr)
	if err != nil {
		return false, fmt.Errorf("notify %s: %w", path, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return false, fmt.Errorf("notify %s: %w", path, err)
	}
	return true, nil
}
