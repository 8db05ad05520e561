package metrics

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"vigil/control/admin"
)

var t0 = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)

func snapshot() Snapshot {
	return Snapshot{
		Status: admin.Status{Cluster: "prod-a", NodeID: 1, NodeName: "alpha", Mode: "ebpf", Version: "v1",
			XDPMode: map[string]string{"priv1": "native", "priv0": "native"}, StartedAt: t0,
			HeartbeatInterval: time.Millisecond, DetectTime: 3 * time.Millisecond, ClusterAddress: "198.18.100.1"},
		Nodes: []admin.NodeStatus{
			{ID: 1, Name: "alpha", Self: true, State: admin.NodeSelf},
			{ID: 2, Name: "beta", State: admin.NodeAlive, LinksUp: 1, Links: 2, Jeopardy: true, Since: t0},
			{ID: 3, Name: `ga"m\ma`, State: admin.NodeDown, Links: 2},
		},
		Links: []admin.LinkStatus{
			{Peer: 2, PeerName: "beta", Link: 0, LinkName: "priv0", State: admin.LinkUp, Received: 1000, Echoes: 990, Lost: 3,
				RTTP50: 40 * time.Microsecond, RTTP99: 90 * time.Microsecond, SRTT: 45 * time.Microsecond, Carrying: true, TxPackets: 7, TxBytes: 700, ErrorThreshold: 10},
			{Peer: 2, PeerName: "beta", Link: 1, LinkName: "priv1", State: admin.LinkDown, ErrorThreshold: 10, Errors: 11, Bad: true},
			{Peer: 2, PeerName: "beta", Kind: admin.LinkDisk, State: admin.LinkUp, Seq: 42},
		},
		Counters: admin.Counters{"bad_mac": 5, "accepted": 12345},
		Cluster: &admin.ClusterStatus{NodeID: 1, Role: "member", State: "running", Term: 7, Leader: 1, Quorate: true,
			Voters: []uint16{1, 2, 3}, Reachable: []uint16{1, 2}, Applied: 10, Commit: 10, LastIndex: 11, ConfigIndex: 4,
			Members: []admin.MemberStatus{{ID: 1, Name: "alpha", Role: "member", State: "running", Voter: true}}},
	}
}

var (
	metricName = `[a-zA-Z_:][a-zA-Z0-9_:]*`
	labelPair  = `[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\\\|\\"|\\n)*"`
	sampleLine = regexp.MustCompile(`^(` + metricName + `)(\{` + labelPair + `(?:,` + labelPair + `)*\})? (\S+)$`)
)

// parse checks the text against the exposition format and returns the series (name and
// labels as written) with their values.
func parse(t *testing.T, text string) map[string]float64 {
	t.Helper()
	series := map[string]float64{}
	typed := map[string]string{}
	helped := map[string]bool{}
	seenSamples := map[string]bool{}
	if !strings.HasSuffix(text, "\n") {
		t.Fatal("the exposition does not end with a newline")
	}
	for i, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		switch {
		case strings.HasPrefix(line, "# HELP "):
			name, _, _ := strings.Cut(strings.TrimPrefix(line, "# HELP "), " ")
			if helped[name] || seenSamples[name] {
				t.Errorf("line %d: HELP of %s repeated or after its samples", i+1, name)
			}
			helped[name] = true
		case strings.HasPrefix(line, "# TYPE "):
			f := strings.Fields(strings.TrimPrefix(line, "# TYPE "))
			if len(f) != 2 || (f[1] != "gauge" && f[1] != "counter") {
				t.Errorf("line %d: bad TYPE line %q", i+1, line)
				continue
			}
			if _, dup := typed[f[0]]; dup || seenSamples[f[0]] {
				t.Errorf("line %d: TYPE of %s repeated or after its samples", i+1, f[0])
			}
			typed[f[0]] = f[1]
		default:
			m := sampleLine.FindStringSubmatch(line)
			if m == nil {
				t.Errorf("line %d: not a valid sample: %q", i+1, line)
				continue
			}
			if typed[m[1]] == "" {
				t.Errorf("line %d: sample of %s without a TYPE before it", i+1, m[1])
			}
			if typed[m[1]] == "counter" && !strings.HasSuffix(m[1], "_total") {
				t.Errorf("line %d: counter %s does not end in _total", i+1, m[1])
			}
			seenSamples[m[1]] = true
			v, err := strconv.ParseFloat(m[3], 64)
			if err != nil {
				t.Errorf("line %d: value %q: %v", i+1, m[3], err)
			}
			key := m[1] + m[2]
			if _, dup := series[key]; dup {
				t.Errorf("line %d: series %s twice", i+1, key)
			}
			series[key] = v
		}
	}
	return series
}

func render(t *testing.T, s Snapshot) string {
	t.Helper()
	var b bytes.Buffer
	if err := Write(&b, s); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestWrite(t *testing.T) {
	text := render(t, snapshot())
	got := parse(t, text)
	want := map[string]float64{
		`vigil_build_info{version="v1",cluster="prod-a",node="1",node_name="alpha",mode="ebpf"}`: 1,
		`vigil_heartbeat_detect_seconds`:                                                                  0.003,
		`vigil_start_time_seconds`:                                                                        float64(t0.Unix()),
		`vigil_xdp_attached{interface="priv0",xdp_mode="native"}`:                                         1,
		`vigil_peer_state{peer="2",peer_name="beta",state="alive"}`:                                       1,
		`vigil_peer_state{peer="2",peer_name="beta",state="down"}`:                                        0,
		`vigil_peer_state{peer="3",peer_name="ga\"m\\ma",state="down"}`:                                   1,
		`vigil_peer_jeopardy{peer="2",peer_name="beta"}`:                                                  1,
		`vigil_peer_links_up{peer="2",peer_name="beta"}`:                                                  1,
		`vigil_link_up{peer="2",peer_name="beta",link="0",link_name="priv0"}`:                             1,
		`vigil_link_up{peer="2",peer_name="beta",link="1",link_name="priv1"}`:                             0,
		`vigil_link_frames_lost_total{peer="2",peer_name="beta",link="0",link_name="priv0"}`:              3,
		`vigil_link_rtt_seconds{peer="2",peer_name="beta",link="0",link_name="priv0",quantile="0.99"}`:    90e-6,
		`vigil_link_carrying{peer="2",peer_name="beta",link="0",link_name="priv0"}`:                       1,
		`vigil_link_bad{peer="2",peer_name="beta",link="1",link_name="priv1"}`:                            1,
		`vigil_disk_heartbeat_sequence{peer="2",peer_name="beta"}`:                                        42,
		`vigil_datapath_total{counter="bad_mac"}`:                                                         5,
		`vigil_cluster_quorate`:                                                                           1,
		`vigil_cluster_is_leader`:                                                                         1,
		`vigil_cluster_term`:                                                                              7,
		`vigil_cluster_voters_reachable`:                                                                  2,
		`vigil_cluster_node_state{state="running",role="member"}`:                                         1,
		`vigil_cluster_node_state{state="admin-wait",role="member"}`:                                      0,
		`vigil_cluster_member{member="1",member_name="alpha",role="member",state="running",voter="true"}`: 1,
	}
	for k, v := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("missing series %s", k)
		} else if g != v {
			t.Errorf("%s = %v, want %v", k, g, v)
		}
	}
	for k := range got {
		if strings.Contains(k, `peer="1"`) {
			t.Errorf("series about this node as a peer: %s", k)
		}
		if strings.HasPrefix(k, "vigil_link_rtt_seconds") && strings.Contains(k, `link="1"`) {
			t.Errorf("RTT reported for a link without echoes: %s", k)
		}
	}
	if again := render(t, snapshot()); again != text {
		t.Error("two renderings of the same snapshot differ")
	}
}

// Without the interconnect and the cluster database their families are absent, not zero:
// a dashboard must not read "no quorum" from a daemon that runs no cluster database.
func TestWriteMinimal(t *testing.T) {
	s := snapshot()
	s.Cluster, s.Status.ClusterAddress = nil, ""
	got := parse(t, render(t, s))
	for k := range got {
		if strings.HasPrefix(k, "vigil_cluster_") || strings.HasPrefix(k, "vigil_link_carrying") || strings.HasPrefix(k, "vigil_link_bad") {
			t.Errorf("series %s without a cluster database or interconnect", k)
		}
	}
	if len(parse(t, render(t, Snapshot{}))) == 0 {
		t.Error("an empty snapshot renders nothing: want at least the build info")
	}
}

type fakeProvider struct{ s Snapshot }

func (f fakeProvider) Status() admin.Status               { return f.s.Status }
func (f fakeProvider) Nodes() []admin.NodeStatus          { return f.s.Nodes }
func (f fakeProvider) Links() []admin.LinkStatus          { return f.s.Links }
func (f fakeProvider) Counters() admin.Counters           { return f.s.Counters }
func (f fakeProvider) ClusterStatus() admin.ClusterStatus { return *f.s.Cluster }

func TestHandler(t *testing.T) {
	srv := httptest.NewServer(Handler{Provider: fakeProvider{snapshot()}})
	defer srv.Close()
	get := func(method, path string) (*http.Response, string) {
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	resp, body := get("GET", "/metrics")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != ContentType {
		t.Fatalf("GET /metrics: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if got := parse(t, body); got["vigil_cluster_quorate"] != 1 {
		t.Errorf("the provider's cluster status did not reach the scrape: %v", got["vigil_cluster_quorate"])
	}
	if resp, _ := get("GET", "/"); resp.StatusCode != 404 {
		t.Errorf("GET /: %d, want 404", resp.StatusCode)
	}
	if resp, _ := get("POST", "/metrics"); resp.StatusCode != 405 || resp.Header.Get("Allow") == "" {
		t.Errorf("POST /metrics: %d, Allow %q; want 405 with Allow", resp.StatusCode, resp.Header.Get("Allow"))
	}
}
