package admin

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"sync"
	"syscall"
	"time"
)

// ErrDaemonNotRunning is wrapped by Dial's error when nothing listens on the socket: the file does
// not exist, or it is left over from a daemon that died.
var ErrDaemonNotRunning = errors.New("vigild is not running")

const (
	dialTimeout = 2 * time.Second
	callTimeout = 10 * time.Second
)

// Client talks to vigild over its admin socket. Its methods are safe for concurrent use; calls
// are serialised on one connection.
type Client struct {
	mu   sync.Mutex
	conn net.Conn
	r    *bufio.Reader
}

// Dial connects to the admin socket at path. If vigild is not running the error wraps
// ErrDaemonNotRunning; if the caller may not use the socket it says so and wraps
// fs.ErrPermission.
func Dial(path string) (*Client, error) {
	conn, err := net.DialTimeout("unix", path, dialTimeout)
	switch {
	case err == nil:
		return &Client{conn: conn, r: bufio.NewReader(conn)}, nil
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ECONNREFUSED):
		return nil, fmt.Errorf("%w: %w", ErrDaemonNotRunning, err)
	case errors.Is(err, fs.ErrPermission):
		return nil, fmt.Errorf("admin socket %s: permission denied: only the user running vigild (normally root) may use it; run this as root, for example with sudo: %w", path, err)
	default:
		return nil, fmt.Errorf("connect to vigild at %s: %w", path, err)
	}
}

// Status returns the daemon's status.
func (c *Client) Status() (Status, error) {
	var s Status
	err := c.call("status", &s)
	return s, err
}

// Nodes returns the local view of every cluster node.
func (c *Client) Nodes() ([]NodeStatus, error) {
	var n []NodeStatus
	err := c.call("nodes", &n)
	return n, err
}

// Links returns the state of every private link to every peer.
func (c *Client) Links() ([]LinkStatus, error) {
	var l []LinkStatus
	err := c.call("links", &l)
	return l, err
}

// Counters returns the rejection counters.
func (c *Client) Counters() (Counters, error) {
	var ctr Counters
	err := c.call("counters", &ctr)
	return ctr, err
}

// ClearLink returns a link taken out of service by the error-rate rule to service.
func (c *Client) ClearLink(name string) (ClearResult, error) {
	var r ClearResult
	err := c.callParams("links.clear", map[string]string{"link": name}, &r)
	return r, err
}

// Close closes the connection.
func (c *Client) Close() error {
	return c.conn.Close()
}

// call sends one request and decodes the result into out.
func (c *Client) call(method string, out any) error {
	return c.callParamsTimeout(method, nil, out, callTimeout)
}

func (c *Client) callParams(method string, params any, out any) error {
	return c.callParamsTimeout(method, params, out, callTimeout)
}

// callParamsTimeout sends one request with params (nil: none) and decodes the result.
func (c *Client) callParamsTimeout(method string, params any, out any, timeout time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := request{Method: method}
	if params != nil {
		p, err := json.Marshal(params)
		if err != nil {
			return fmt.Errorf("admin %s: encode params: %w", method, err)
		}
		r.Params = p
	}
	req, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("admin %s: encode request: %w", method, err)
	}
	if len(req) > MaxRequestLine {
		return fmt.Errorf("admin %s: request of %d bytes is larger than the %d bytes vigild accepts", method, len(req), MaxRequestLine)
	}
	if err := c.conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return fmt.Errorf("admin %s: %w", method, err)
	}
	if _, err := c.conn.Write(append(req, '\n')); err != nil {
		return fmt.Errorf("admin %s: send request: %w", method, err)
	}
	line, err := c.r.ReadBytes('\n')
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = errors.New("vigild closed the connection")
		}
		return fmt.Errorf("admin %s: read response: %w", method, err)
	}
	var resp response
	if err := json.Unmarshal(line, &resp); err != nil {
		return fmt.Errorf("admin %s: decode response: %w", method, err)
	}
	if resp.Error != "" {
		return fmt.Errorf("admin %s: vigild answered: %s", method, resp.Error)
	}
	if len(resp.Result) == 0 {
		return fmt.Errorf("admin %s: response has neither result nor error", method)
	}
	if err := json.Unmarshal(resp.Result, out); err != nil {
		return fmt.Errorf("admin %s: decode result: %w", method, err)
	}
	return nil
}
