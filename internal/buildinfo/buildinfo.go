// Package buildinfo tells which build of Vigil is running: the version set at link time by the
// Makefile, or the module version and VCS revision Go recorded.
package buildinfo

import "runtime/debug"

// version is set by the Makefile: -ldflags "-X vigil/internal/buildinfo.version=...".
var version string

// Version returns the version of this build, "dev" when nothing better is known.
func Version() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return "dev-" + s.Value[:12]
			}
		}
	}
	return "dev"
}
