package test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"vigil/test/netns"
	"vigil/test/vcluster"
)

// Prometheus metrics of real daemons, scraped inside each node's namespace the way a local
// Prometheus agent would: every peer alive on every link and quorum; then node 3 cut off says
// it has no quorum and sees its peers down, while node 1 sees node 3 down and keeps quorum.

const metricsAddr = "127.0.0.1:9405"

// scrape fetches /metrics of the node's daemon and returns the samples by series.
func scrape(n *vcluster.Node) (map[string]float64, error) {
	// The socket is made inside the namespace (on Do's thread); the HTTP client, whose
	// goroutines run anywhere, only uses it.
	var conn net.Conn
	err := n.NS.Do(func() (err error) {
		conn, err = net.DialTimeout("tcp", metricsAddr, 5*time.Second)
		return err
	})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+metricsAddr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	used := false
	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(context.Context, string, string) (net.Conn, error) {
		if used {
			return nil, fmt.Errorf("one connection per scrape")
		}
		used = true
		return conn, nil
	}}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	body := string(b)
	samples := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("node %d: bad sample %q", n.ID, line)
		}
		samples[line[:i]] = v
	}
	return samples, nil
}

// waitMetrics scrapes until every wanted series has its value.
func waitMetrics(t *testing.T, n *vcluster.Node, want map[string]float64) {
	t.Helper()
	deadline := time.Now().Add(clusterWait)
	for {
		got, err := scrape(n)
		var wrong []string
		for k, v := range want {
			if g, ok := got[k]; err == nil && (!ok || g != v) {
				wrong = append(wrong, fmt.Sprintf("%s = %v (present %v), want %v", k, g, ok, v))
			}
		}
		if err == nil && len(wrong) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %d metrics after %v: %v\n%s", n.ID, clusterWait, err, strings.Join(wrong, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestMetrics(t *testing.T) {
	c := newRaftCluster(t, vcluster.Options{AllArgs: []string{"--metrics-listen", metricsAddr}})
	waitQuorum(t, c, 1, 2, 3)
	for _, n := range c.Nodes {
		want := map[string]float64{"vigil_cluster_quorate": 1, "vigil_cluster_voters": 3}
		for _, p := range c.Nodes {
			if p.ID == n.ID {
				continue
			}
			peer := fmt.Sprintf(`peer="%d",peer_name="node%d"`, p.ID, p.ID)
			want[`vigil_peer_state{`+peer+`,state="alive"}`] = 1
			want[`vigil_peer_jeopardy{`+peer+`}`] = 0
			for l := range 2 {
				want[fmt.Sprintf(`vigil_link_up{%s,link="%d",link_name="%s"}`, peer, l, netns.LinkID(l).String())] = 1
			}
		}
		waitMetrics(t, n, want)
	}

	p, err := c.Net.Partition(netns.PrivateLinks, []int{3}, []int{1, 2})
	if err != nil {
		t.Fatal(err)
	}
	waitMetrics(t, c.Node(3), map[string]float64{
		"vigil_cluster_quorate": 0,
		`vigil_peer_state{peer="1",peer_name="node1",state="down"}`:  1,
		`vigil_peer_state{peer="1",peer_name="node1",state="alive"}`: 0,
	})
	waitMetrics(t, c.Node(1), map[string]float64{
		"vigil_cluster_quorate": 1,
		`vigil_peer_state{peer="3",peer_name="node3",state="down"}`: 1,
	})
	if err := p.Undo(); err != nil {
		t.Fatal(err)
	}
	waitMetrics(t, c.Node(3), map[string]float64{"vigil_cluster_quorate": 1})
}
