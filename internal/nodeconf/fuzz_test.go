package nodeconf

import (
	"reflect"
	"strings"
	"testing"
)

// FuzzParse checks that Parse never panics, that every error line names the file, and that a
// config that parses survives Marshal and Parse unchanged.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		fullExample,
		withMinimal(),
		withMinimal("heartbeat: {interval: 1ms, sweep: 500us, stall_timeout: 1s, progress_timeout: 2s}"),
		withMinimal("  - name: wan0", "    udp: {local: 10.0.0.1:5405}", "peers:", "  - {id: 2, udp: {wan0: 10.0.0.2:5405}}"),
		withMinimal("peers: [{id: 2, name: beta}, {id: 3}]"),
		withMinimal("interconnect: {network: 198.18.100.0/24, policy: primary, error_threshold: 3, error_window: 10s, error_clean: 1m}"),
		withMinimal("interconnect: {network: 198.18.100.0/27}", "disk_heartbeat: {path: /dev/sdb, interval: 10ms, timeout: 5ms}"),
		withMinimal("disk_heartbeat: {path: shared.disk}"),
		"cluster: &a x\nnode: 1\nname: *a\nkey_file: k\ndata_dir: d\nlinks: &l [{name: *a}]\npeers: *l\n",
		"a: &a [*a]\n",
		"- a\n",
		"",
		"---\n---\n",
		"cluster: [\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.yaml", data)
		if err != nil {
			if c != nil {
				t.Fatal("Parse returned a Config with an error")
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, "fuzz.yaml:") {
					t.Fatalf("error line %q does not start with the file name", line)
				}
			}
			return
		}
		out, err := c.Marshal()
		if err != nil {
			t.Fatalf("Marshal of a parsed config: %v\ninput:\n%s", err, data)
		}
		back, err := Parse("marshalled.yaml", out)
		if err != nil {
			t.Fatalf("Parse(Marshal()): %v\nYAML:\n%s", err, out)
		}
		if !reflect.DeepEqual(back, c) {
			t.Fatalf("round trip changed the config:\n got %+v\nwant %+v\nYAML:\n%s", back, c, out)
		}
	})
}
