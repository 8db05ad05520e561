// Command vigil is the admin CLI of a Vigil cluster. It talks to the local vigild through the
// admin API socket and never loads eBPF programs or touches io_uring itself.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/alecthomas/kong"

	"vigil/internal/buildinfo"
)

// CLI is the command tree; each command is a struct with a Run method.
type CLI struct {
	Version VersionCmd `cmd:"" help:"Print the version of this vigil binary."`
}

// VersionCmd prints the build version.
type VersionCmd struct{}

// Run prints the version.
func (VersionCmd) Run(out io.Writer) error {
	_, err := fmt.Fprintf(out, "vigil %s\n", buildinfo.Version())
	return err
}

func main() {
	var cli CLI
	ctx := kong.Parse(&cli,
		kong.Name("vigil"),
		kong.Description("Administer a Vigil high-availability cluster."),
		kong.UsageOnError(),
		kong.BindTo(io.Writer(os.Stdout), (*io.Writer)(nil)),
	)
	ctx.FatalIfErrorf(ctx.Run())
}
