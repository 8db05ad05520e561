// Command vigil is the admin CLI of a Vigil cluster. It talks to the local vigild through the
// admin API socket and never loads eBPF programs or touches io_uring itself.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/alecthomas/kong"

	"vigil/control/admin"
	"vigil/internal/buildinfo"
	"vigil/internal/nodeconf"
)

// Stderr is where commands write warnings (bound apart from their output, an io.Writer).
type Stderr io.Writer

// Globals are the flags every command takes.
type Globals struct {
	Socket string `help:"Path of vigild's admin socket (default: ${default})." default:"${socket}" env:"VIGIL_SOCKET" placeholder:"PATH"`
	JSON   bool   `name:"json" help:"Print the API result as JSON instead of a table."`
}

// CLI is the command tree; each command is a struct with a Run method.
type CLI struct {
	Globals

	Status   StatusCmd   `cmd:"" help:"Show this node's daemon: cluster, node, heartbeat mode and timing."`
	Nodes    NodesCmd    `cmd:"" help:"List the cluster nodes and how this node sees them."`
	Links    LinksCmd    `cmd:"" help:"List the private links to every peer, with RTT and loss."`
	Counters CountersCmd `cmd:"" help:"Show counters of rejected heartbeat frames."`
	Keygen   KeygenCmd   `cmd:"" help:"Write a new random 128-bit cluster key file (mode 0600) to copy to every node."`
	Config   ConfigCmd   `cmd:"" help:"Show, diff, apply, back up and restore the cluster configuration."`
	Log      LogCmd      `cmd:"" help:"Show the cluster event log: joins, leaves, node states, configuration, leader and quorum changes."`
	Node     NodeCmd     `cmd:"" help:"Add or remove cluster members."`
	DRD      DRDCmd      `cmd:"" name:"drd" help:"Manage distributed raw disks: create, delete, list, status, relocate."`
	Version  VersionCmd  `cmd:"" help:"Print the version of this vigil binary."`
}

// KeygenCmd writes a new cluster key.
type KeygenCmd struct {
	Path string `arg:"" type:"path" help:"Where to write the key; an existing file is never overwritten."`
}

// Run writes the key file.
func (k KeygenCmd) Run(g *Globals, out io.Writer) error {
	if err := nodeconf.GenerateKey(k.Path); err != nil {
		return err
	}
	if g.JSON {
		return printJSON(out, struct {
			Path string `json:"path"`
		}{k.Path})
	}
	_, err := fmt.Fprintf(out, "wrote a new cluster key to %s; copy it to every node (key_file in node.yaml)\n", k.Path)
	return err
}

// VersionCmd prints the build version.
type VersionCmd struct{}

// Run prints the version.
func (VersionCmd) Run(g *Globals, out io.Writer) error {
	if g.JSON {
		return printJSON(out, struct {
			Version string `json:"version"`
		}{buildinfo.Version()})
	}
	_, err := fmt.Fprintf(out, "vigil %s\n", buildinfo.Version())
	return err
}

// newParser builds the kong parser for cli. now is the clock relative times are computed
// against; exit is called by kong for --help and by FatalIfErrorf.
func newParser(cli *CLI, stdout, stderr io.Writer, now func() time.Time, exit func(int)) (*kong.Kong, error) {
	return kong.New(cli,
		kong.Name("vigil"),
		kong.Description("Administer a Vigil high-availability cluster through the local vigild."),
		kong.UsageOnError(),
		kong.Vars{"socket": admin.DefaultSocketPath},
		kong.Writers(stdout, stderr),
		kong.Exit(exit),
		kong.BindTo(stdout, (*io.Writer)(nil)),
		kong.BindTo(stderr, (*Stderr)(nil)),
		kong.Bind(&cli.Globals, now),
	)
}

// exitCode carries an exit status out of kong's Exit callback.
type exitCode int

// run parses args, runs the command and returns the exit status: 0 on success, 1 when the
// command fails, kong's status (80) for bad usage.
func run(args []string, stdout, stderr io.Writer, now func() time.Time) (code int) {
	defer func() {
		if r := recover(); r != nil {
			c, ok := r.(exitCode)
			if !ok {
				panic(r)
			}
			code = int(c)
		}
	}()
	var cli CLI
	parser, err := newParser(&cli, stdout, stderr, now, func(c int) { panic(exitCode(c)) })
	if err != nil {
		panic(err) // the CLI struct is malformed: a bug
	}
	ctx, err := parser.Parse(args)
	parser.FatalIfErrorf(err)
	if err := ctx.Run(); err != nil {
		fmt.Fprintf(stderr, "vigil: %v\n", err)
		return 1
	}
	return 0
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, time.Now))
}

// dial connects to vigild, turning "not running" into advice.
func dial(g *Globals) (*admin.Client, error) {
	c, err := admin.Dial(g.Socket)
	if errors.Is(err, admin.ErrDaemonNotRunning) {
		why := "no socket at " + g.Socket
		if errors.Is(err, syscall.ECONNREFUSED) {
			why = "nothing listens on " + g.Socket
		}
		return nil, fmt.Errorf("vigild is not running (%s); start it with: vigild --config /etc/vigil/node.yaml", why)
	}
	return c, err
}

// query dials vigild, calls get and closes the connection.
func query[T any](g *Globals, get func(*admin.Client) (T, error)) (T, error) {
	c, err := dial(g)
	if err != nil {
		var zero T
		return zero, err
	}
	defer c.Close()
	return get(c)
}
