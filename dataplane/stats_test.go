//go:build linux

package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// TestMain fails the package when tests leak BPF objects: every program,
// map, link and BTF blob is a file descriptor, and Close must release them.
func TestMain(m *testing.M) {
	before, err := bpfFDs()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	after, err := bpfFDs()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if code == 0 && after > before {
		fmt.Fprintf(os.Stderr, "tests leaked %d BPF file descriptors\n", after-before)
		code = 1
	}
	os.Exit(code)
}

// bpfFDs counts this process's descriptors of BPF objects (anon_inode:bpf-prog,
// anon_inode:bpf-map, anon_inode:bpf_link, anon_inode:btf, ...).
func bpfFDs() (int, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, fmt.Errorf("count bpf fds: %w", err)
	}
	n := 0
	for _, e := range ents {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue // the directory's own descriptor, closed by now
		}
		if strings.HasPrefix(target, "anon_inode:bpf") || target == "anon_inode:btf" {
			n++
		}
	}
	return n, nil
}

// requireRoot skips a test that loads BPF objects when not run as root.
// CI runs the tests as root, so the skip cannot hide a failure there.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to load BPF programs and run BPF_PROG_TEST_RUN")
	}
}

// XDP verdicts (enum xdp_action).
const (
	xdpDrop = 1
	xdpPass = 2
)

const (
	ethHdrLen          = 14
	heartbeatEtherType = 0x88B5
)

// frame returns an n-byte Ethernet frame with the given ethertype.
func frame(etherType uint16, n int) []byte {
	f := make([]byte, n)
	copy(f[0:6], []byte{0x02, 0, 0, 0, 0, 0x01})  // destination
	copy(f[6:12], []byte{0x02, 0, 0, 0, 0, 0x02}) // source
	binary.BigEndian.PutUint16(f[12:14], etherType)
	for i := ethHdrLen; i < n; i++ {
		f[i] = byte(i)
	}
	return f
}

// xdpMD is struct xdp_md, the context BPF_PROG_TEST_RUN takes for XDP.
type xdpMD struct {
	Data           uint32
	DataEnd        uint32
	DataMeta       uint32
	IngressIfindex uint32
	RxQueueIndex   uint32
	EgressIfindex  uint32
}

func loadStatsForTest(t *testing.T) *Stats {
	t.Helper()
	requireRoot(t)
	s, err := LoadStats(StatsOptions{})
	if err != nil {
		t.Fatal(err) // as root on a supported kernel this must work
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// shortLinearSince is the first kernel seen to honour an XDP context whose
// data_end is shorter than the test input (the rest becomes a fragment). It
// is the only way BPF_PROG_TEST_RUN shows a program fewer than ETH_HLEN bytes:
// the kernel rejects input shorter than that.
var shortLinearSince = [2]int{6, 18}

// TestStatsVerdicts runs xdp_stats on one frame per case and checks the
// verdict and that exactly one class counter moved, by one frame and the
// bytes the program saw.
//
// A case with linear < len(in) sets xdp_md.data_end = linear, so the program
// sees only the first linear bytes between data and data_end. That is how
// the malformed cases present a frame shorter than an Ethernet header.
func TestStatsVerdicts(t *testing.T) {
	s := loadStatsForTest(t)

	tests := []struct {
		name    string
		in      []byte
		linear  int // bytes the program sees; -1 means all of in
		verdict uint32
		class   Class
	}{
		{"ipv4", frame(0x0800, 98), -1, xdpPass, ClassIPv4},
		{"ipv6", frame(0x86DD, 118), -1, xdpPass, ClassIPv6},
		{"arp", frame(0x0806, 42), -1, xdpPass, ClassARP},
		{"heartbeat", frame(heartbeatEtherType, 64), -1, xdpPass, ClassHeartbeat},
		{"unknown ethertype", frame(0x9000, 60), -1, xdpPass, ClassOther},
		{"vlan tag is other", frame(0x8100, 64), -1, xdpPass, ClassOther},
		{"bare ethernet header", frame(0x0800, ethHdrLen), -1, xdpPass, ClassIPv4},
		{"10-byte frame", frame(0x0800, ethHdrLen), 10, xdpDrop, ClassMalformed},
		{"13-byte frame", frame(0x0800, ethHdrLen), ethHdrLen - 1, xdpDrop, ClassMalformed},
		{"empty frame", frame(0x0800, ethHdrLen), 0, xdpDrop, ClassMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, err := s.Totals()
			if err != nil {
				t.Fatal(err)
			}

			seen := len(tt.in)
			opts := &ebpf.RunOptions{Data: tt.in}
			if tt.linear >= 0 {
				seen = tt.linear
				opts.Context = xdpMD{DataEnd: uint32(tt.linear)}
			}
			verdict, err := s.Program.Run(opts)
			if err != nil {
				if tt.linear >= 0 && errors.Is(err, unix.EINVAL) {
					skipIfKernelOlder(t, shortLinearSince,
						"BPF_PROG_TEST_RUN rejects an XDP data_end shorter than the input")
				}
				t.Fatalf("run xdp_stats: %v", err)
			}
			if verdict != tt.verdict {
				t.Errorf("verdict = %d, want %d", verdict, tt.verdict)
			}

			after, err := s.Totals()
			if err != nil {
				t.Fatal(err)
			}
			want := before
			want[tt.class].Packets++
			want[tt.class].Bytes += uint64(seen)
			for c := range NumClasses {
				if after[c] != want[c] {
					t.Errorf("class %v: counters %+v, want %+v", Class(c), after[c], want[c])
				}
			}
		})
	}
}

// skipIfKernelOlder skips t with the reason when the running kernel is older
// than minVersion; on a newer kernel it returns and the caller fails.
func skipIfKernelOlder(t *testing.T, minVersion [2]int, reason string) {
	t.Helper()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatalf("uname: %v", err)
	}
	release := unix.ByteSliceToString(u.Release[:])
	var major, minor int
	if _, err := fmt.Sscanf(release, "%d.%d", &major, &minor); err != nil {
		t.Fatalf("parse kernel release %q: %v", release, err)
	}
	if major < minVersion[0] || major == minVersion[0] && minor < minVersion[1] {
		t.Skipf("%s (kernel %s, needs %d.%d)", reason, release, minVersion[0], minVersion[1])
	}
}

func TestStatsCloseTwice(t *testing.T) {
	s := loadStatsForTest(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestStatsDrift fails when bpf/stats.h and the Go side disagree: the BTF in
// the committed object must describe exactly the classes and the counter
// layout that stats.go assumes. It needs no privileges.
func TestStatsDrift(t *testing.T) {
	spec, err := loadStats()
	if err != nil {
		t.Fatal(err)
	}

	goClasses := map[string]int{
		"STATS_CLASS_IPV4":      int(ClassIPv4),
		"STATS_CLASS_IPV6":      int(ClassIPv6),
		"STATS_CLASS_ARP":       int(ClassARP),
		"STATS_CLASS_HEARTBEAT": int(ClassHeartbeat),
		"STATS_CLASS_OTHER":     int(ClassOther),
		"STATS_CLASS_MALFORMED": int(ClassMalformed),
		"STATS_CLASS_MAX":       NumClasses,
	}
	var enum *btf.Enum
	if err := spec.Types.TypeByName("stats_class", &enum); err != nil {
		t.Fatalf("enum stats_class in BTF: %v", err)
	}
	if len(enum.Values) != len(goClasses) {
		t.Errorf("enum stats_class has %d values, Go knows %d", len(enum.Values), len(goClasses))
	}
	for _, v := range enum.Values {
		if goVal, ok := goClasses[v.Name]; !ok {
			t.Errorf("%s = %d is not known to Go", v.Name, v.Value)
		} else if uint64(goVal) != v.Value {
			t.Errorf("%s = %d in C, %d in Go", v.Name, v.Value, goVal)
		}
	}
	for c := range NumClasses {
		if name := Class(c).String(); name == "" {
			t.Errorf("class %d has no name", c)
		}
	}

	var counter *btf.Struct
	if err := spec.Types.TypeByName("stats_counter", &counter); err != nil {
		t.Fatalf("struct stats_counter in BTF: %v", err)
	}
	if goSize := unsafe.Sizeof(statsStatsCounter{}); counter.Size != uint32(goSize) {
		t.Errorf("struct stats_counter is %d bytes in C, %d in Go", counter.Size, goSize)
	}
	wantMembers := []struct {
		name   string
		offset btf.Bits
	}{{"packets", 0}, {"bytes", 64}}
	if len(counter.Members) != len(wantMembers) {
		t.Fatalf("struct stats_counter has %d members, want %d", len(counter.Members), len(wantMembers))
	}
	for i, m := range counter.Members {
		if m.Name != wantMembers[i].name || m.Offset != wantMembers[i].offset {
			t.Errorf("member %d is %s at bit %d, want %s at bit %d",
				i, m.Name, m.Offset, wantMembers[i].name, wantMembers[i].offset)
		}
	}

	m := spec.Maps[statsMapStatsCounters]
	if m == nil {
		t.Fatalf("no map %q in spec", statsMapStatsCounters)
	}
	if m.Type != ebpf.PerCPUArray || m.KeySize != 4 ||
		m.ValueSize != uint32(unsafe.Sizeof(statsStatsCounter{})) || m.MaxEntries != uint32(NumClasses) {
		t.Errorf("map %s: type %v key %d value %d entries %d, want PerCPUArray 4 %d %d",
			m.Name, m.Type, m.KeySize, m.ValueSize, m.MaxEntries,
			unsafe.Sizeof(statsStatsCounter{}), NumClasses)
	}

	p := spec.Programs[statsProgXdpStats]
	if p == nil || p.Type != ebpf.XDP {
		t.Errorf("program %q missing or not XDP: %v", statsProgXdpStats, p)
	}
}
