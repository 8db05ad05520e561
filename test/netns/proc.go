package netns

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Command returns a command that runs inside the namespace. `ip netns exec` execs the program in
// place, so the started process's PID is the program's own. Start it with [Namespace.Start] so the
// cluster ends it on Close.
func (ns *Namespace) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// Run runs a program inside the namespace to completion and returns its combined output. The
// context bounds its run time.
func (ns *Namespace) Run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s in %s: %w", name, strings.Join(args, " "), ns.Name, err)
	}
	return string(out), nil
}

// Start starts cmd (made by [Namespace.Command]) and tracks it, so the cluster kills it on Close.
func (ns *Namespace) Start(cmd *exec.Cmd) (*Proc, error) {
	return ns.c.start(cmd)
}

func (c *Cluster) start(cmd *exec.Cmd) (*Proc, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errors.New("netns: cluster is closed")
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	p := &Proc{Cmd: cmd, c: c, done: make(chan struct{})}
	c.procs[cmd.Process.Pid] = p
	go p.wait()
	return p, nil
}

// Proc is a process started by the harness.
type Proc struct {
	Cmd  *exec.Cmd
	c    *Cluster
	done chan struct{}
	err  error // valid after done is closed
	once sync.Once
}

// PID returns the process id.
func (p *Proc) PID() int { return p.Cmd.Process.Pid }

func (p *Proc) wait() {
	p.err = p.Cmd.Wait()
	if p.c != nil {
		p.c.mu.Lock()
		delete(p.c.procs, p.PID())
		p.c.mu.Unlock()
	}
	close(p.done)
}

func (p *Proc) signal(sig syscall.Signal) error {
	select {
	case <-p.done:
		return fmt.Errorf("signal %v to pid %d: process has exited", sig, p.PID())
	default:
	}
	if err := p.Cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %v to pid %d: %w", sig, p.PID(), err)
	}
	return nil
}

// Stop freezes the process with SIGSTOP, as a paused VM or a starved scheduler would.
func (p *Proc) Stop() error { return p.signal(syscall.SIGSTOP) }

// Cont resumes a stopped process with SIGCONT.
func (p *Proc) Cont() error { return p.signal(syscall.SIGCONT) }

// Kill sends SIGKILL and waits for the process to be reaped.
func (p *Proc) Kill() error {
	if err := p.signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-p.done
	return nil
}

// Terminate sends SIGTERM and waits up to grace for the process to exit, then kills it. It
// returns the exit error of the process (nil for a clean exit after SIGTERM).
func (p *Proc) Terminate(grace time.Duration) error {
	if err := p.signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case <-p.done:
		return p.err
	case <-time.After(grace):
		p.kill()
		return fmt.Errorf("pid %d did not exit within %v of SIGTERM; killed", p.PID(), grace)
	}
}

// Done is closed when the process has exited and been reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Wait waits for the process to exit and returns its exit error.
func (p *Proc) Wait() error {
	<-p.done
	return p.err
}

// kill ends the process whatever its state (a stopped process dies of SIGKILL too) and reaps it.
func (p *Proc) kill() {
	p.once.Do(func() {
		_ = p.Cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	})
}

// Load is a CPU saturation started by [Cluster.SaturateCPUs].
type Load struct {
	procs []*Proc
	timer *time.Timer
}

// PIDs returns the process ids of the busy loops.
func (l *Load) PIDs() []int {
	pids := make([]int, len(l.procs))
	for i, p := range l.procs {
		pids[i] = p.PID()
	}
	return pids
}

// Stop ends the saturation early. It is idempotent.
func (l *Load) Stop() {
	l.timer.Stop()
	for _, p := range l.procs {
		p.kill()
	}
}

// Done is closed when every busy loop has ended.
func (l *Load) Done() <-chan struct{} {
	done := make(chan struct{})
	go func() {
		for _, p := range l.procs {
			<-p.done
		}
		close(done)
	}()
	return done
}

// SaturateCPUs runs one busy loop per CPU (in the root namespace: CPUs are not namespaced) for
// the given duration, then ends them. The loops run at normal priority, so they compete with the
// daemons as any other load would.
func (c *Cluster) SaturateCPUs(d time.Duration) (*Load, error) {
	l := &Load{}
	for range runtime.NumCPU() {
		cmd := exec.Command("/bin/sh", "-c", "while :; do :; done")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, nil, nil
		p, err := c.start(cmd)
		if err != nil {
			for _, q := range l.procs {
				q.kill()
			}
			return nil, err
		}
		l.procs = append(l.procs, p)
	}
	l.timer = time.AfterFunc(d, func() {
		for _, p := range l.procs {
			p.kill()
		}
	})
	return l, nil
}

// processAlive reports whether a process with the pid exists.
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// netnsInode returns the inode of a network namespace file.
func netnsInode(path string) (uint64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("stat %s: no inode", path)
	}
	return st.Ino, nil
}
