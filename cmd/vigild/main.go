// Command vigild is the Vigil node daemon: one per node, it runs the heartbeat plane, takes part
// in membership and quorum, and brings service groups online and offline.
package main

import (
	"flag"
	"fmt"
	"os"

	"vigil/internal/buildinfo"
)

func main() {
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Printf("vigild %s\n", buildinfo.Version())
		return
	}
	fmt.Fprintln(os.Stderr, "vigild: the node daemon is not implemented yet; only --version works in this build")
	os.Exit(2)
}
