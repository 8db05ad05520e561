package admin

import (
	"fmt"
	"strings"
	"testing"
)

// clearer is a fake provider with an error-rate rule.
type clearer struct {
	*fakeProvider
	cleared []string
}

func (c *clearer) ClearLink(name string) (ClearResult, error) {
	if name != "priv0" {
		return ClearResult{}, fmt.Errorf("no link named %q", name)
	}
	c.cleared = append(c.cleared, name)
	return ClearResult{Link: name, WasBad: true, Message: "back in service"}, nil
}

func TestLinksClear(t *testing.T) {
	p := &clearer{fakeProvider: newFake()}
	s := startServer(t, p, nil)
	c, err := Dial(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, err := c.ClearLink("priv0")
	if err != nil || r != (ClearResult{Link: "priv0", WasBad: true, Message: "back in service"}) || len(p.cleared) != 1 {
		t.Fatalf("ClearLink: %+v, %v (cleared %v)", r, err, p.cleared)
	}
	if _, err := c.ClearLink("nope"); err == nil || !strings.Contains(err.Error(), `no link named "nope"`) {
		t.Errorf("unknown link: %v", err)
	}
	for _, tc := range []struct{ in, want string }{
		{`{"method":"links.clear"}`, `\"link\" (a link name) is required`},
		{`{"method":"links.clear","params":{"link":"priv0","force":true}}`, `unknown field \"force\"`},
		{`{"method":"links.clear","params":{"link":3}}`, `params: json: cannot unmarshal`},
		{`{"method":"links.clear","params":[1]}`, `\"params\" must be a JSON object`},
	} {
		if got := string(handleLine(p, []byte(tc.in))); !strings.Contains(got, tc.want) {
			t.Errorf("%s: %s, want %s", tc.in, got, tc.want)
		}
	}
	// A daemon without the rule says so.
	if got := string(handleLine(newFake(), []byte(`{"method":"links.clear","params":{"link":"priv0"}}`))); !strings.Contains(got, "no interconnect error-rate rule") {
		t.Errorf("provider without the rule: %s", got)
	}
	if got := string(handleLine(newFake(), []byte(`{"method":"nope"}`))); !strings.Contains(got, "links.clear") {
		t.Errorf("unknown method does not list links.clear: %s", got)
	}
}
