package admin

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
)

// checkResponseLine fails unless line is exactly one JSON object on one line holding either a
// result or a non-empty error.
func checkResponseLine(t *testing.T, in, line []byte) response {
	t.Helper()
	if len(line) == 0 || line[len(line)-1] != '\n' || bytes.Count(line, []byte("\n")) != 1 {
		t.Fatalf("request %q: response %q is not exactly one line", in, line)
	}
	if !json.Valid(line) {
		t.Fatalf("request %q: response %q is not valid JSON", in, line)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(line, &fields); err != nil {
		t.Fatalf("request %q: response %q is not an object: %v", in, line, err)
	}
	var resp response
	json.Unmarshal(line, &resp)
	if len(fields) != 1 || (resp.Error == "") == (resp.Result == nil) {
		t.Fatalf("request %q: response %q must hold exactly one of result and error", in, line)
	}
	return resp
}

func TestHandleLine(t *testing.T) {
	p := newFake()
	p.links[0].LossPercent = math.NaN() // cannot be encoded in JSON
	for _, tc := range []struct{ in, want string }{
		{`{"method":"status"}`, `{"result":{"cluster":"prod"`},
		{`{"method":"status"}` + "\n", `{"result":{"cluster":"prod"`},
		{`{"method":"links"}`, `{"error":"method \"links\": encode result: json: unsupported value: NaN"}`},
		{`{"method":"` + strings.Repeat("x", 1000) + `"}`, `{"error":"unknown method \"` + strings.Repeat("x", 64) + `\"...;`},
		{"{\"method\":\"\xff\"}", "{\"error\":\"unknown method \\\"\uFFFD\\\";"},
		{`{"method":"nodes","a":1,"b":2}`, `unknown field \"a\", \"b\"`},
	} {
		got := handleLine(p, []byte(tc.in))
		checkResponseLine(t, []byte(tc.in), got)
		if !strings.Contains(string(got), tc.want) {
			t.Errorf("handleLine(%q) = %s, want it to contain %s", tc.in, got, tc.want)
		}
	}
}

func FuzzRequest(f *testing.F) {
	for _, seed := range []string{
		`{"method":"status"}`, `{"method":"nodes"}`, `{"method":"links","params":{}}`, `{"method":"counters","params":null}`,
		`{"method":"x"}`, `{"method":"links","x":1}`, `{"method":`, `[]`, `null`, `""`, "", "\n", "{}\n{}",
		"{\"method\":\"\xff\xfe\"}", `{"params":{"a":[1,2,{"b":null}]},"method":"status"}`, `{"method":"status"}  `,
		`{"method":"log","params":{"kinds":["x"],"wait_ms":5}}`, `{"method":"config.apply","params":{"data":7}}`, `{"method":"node.add","params":null}`,
	} {
		f.Add([]byte(seed))
	}
	p := newFake()
	f.Fuzz(func(t *testing.T, line []byte) {
		checkResponseLine(t, line, handleLine(p, line))
	})
}
