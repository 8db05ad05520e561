package admin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// methods maps each method name to the Provider call that answers it. Every method so far takes
// no params. Slices and maps are never encoded as null.
var methods = map[string]func(Provider) any{
	"status": func(p Provider) any { return p.Status() },
	"nodes": func(p Provider) any {
		if n := p.Nodes(); n != nil {
			return n
		}
		return []NodeStatus{}
	},
	"links": func(p Provider) any {
		if l := p.Links(); l != nil {
			return l
		}
		return []LinkStatus{}
	},
	"counters": func(p Provider) any {
		if c := p.Counters(); c != nil {
			return c
		}
		return Counters{}
	},
}

// paramMethods are the methods that take params; they answer an error for bad params or a
// failed action.
var paramMethods = map[string]func(Provider, json.RawMessage) (any, error){
	"links.clear": func(p Provider, raw json.RawMessage) (any, error) {
		var params struct {
			Link string `json:"link"`
		}
		if err := strictParams(raw, &params, "link"); err != nil {
			return nil, err
		}
		if params.Link == "" {
			return nil, fmt.Errorf(`params: "link" (a link name) is required`)
		}
		lc, ok := p.(LinkClearer)
		if !ok {
			return nil, fmt.Errorf("this daemon has no interconnect error-rate rule")
		}
		return lc.ClearLink(params.Link)
	},
}

// strictParams decodes a params object into out, allowing only the given keys.
func strictParams(raw json.RawMessage, out any, allowed ...string) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return fmt.Errorf(`"params" must be a JSON object`)
	}
	for k := range m {
		if !slices.Contains(allowed, k) {
			return fmt.Errorf("params: unknown field %s (allowed: %s)", quote(k), strings.Join(allowed, ", "))
		}
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("params: %v", err)
	}
	return nil
}

// request is the decoded form of a request line.
type request struct {
	Method string          `json:"method"`
	Params json.RawMessage `json:"params,omitempty"`
}

// response is one response line: exactly one of Result and Error is set.
type response struct {
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
}

// handleLine turns one request line (with or without its newline) into one response line,
// newline included. It never panics on any input and always returns a single valid JSON object
// on one line; only a panic inside the Provider escapes it.
func handleLine(p Provider, line []byte) []byte { return handleLineAs(p, line, "") }

// handleLineAs is handleLine for a caller named who (for the cluster event log).
func handleLineAs(p Provider, line []byte, who string) []byte {
	req, err := parseRequest(line)
	if err != nil {
		return errorLine(err.Error())
	}
	var value any
	if ccall, ok := clusterMethods[req.Method]; ok {
		cp, ok := p.(ClusterProvider)
		if !ok {
			return errorLine(fmt.Sprintf("method %s: %v", quote(req.Method), errNoCluster))
		}
		if value, err = ccall(cp, req.Params, who); err != nil {
			return errorLine(fmt.Sprintf("method %s: %v", quote(req.Method), err))
		}
	} else if dcall, ok := drdMethods[req.Method]; ok {
		dp, ok := p.(DRDProvider)
		if !ok {
			return errorLine(fmt.Sprintf("method %s: %v", quote(req.Method), errNoDRD))
		}
		if value, err = dcall(dp, req.Params, who); err != nil {
			return errorLine(fmt.Sprintf("method %s: %v", quote(req.Method), err))
		}
	} else if pcall, ok := paramMethods[req.Method]; ok {
		if value, err = pcall(p, req.Params); err != nil {
			return errorLine(fmt.Sprintf("method %s: %v", quote(req.Method), err))
		}
	} else {
		call, ok := methods[req.Method]
		if !ok {
			known := slices.Sorted(maps.Keys(methods))
			known = append(known, slices.Collect(maps.Keys(clusterMethods))...)
			known = append(known, slices.Collect(maps.Keys(paramMethods))...)
			known = append(known, slices.Collect(maps.Keys(drdMethods))...)
			slices.Sort(known)
			return errorLine(fmt.Sprintf("unknown method %s; known methods: %s",
				quote(req.Method), strings.Join(known, ", ")))
		}
		if err := noParams(req.Params); err != nil {
			return errorLine(fmt.Sprintf("method %s: %v", quote(req.Method), err))
		}
		value = call(p)
	}
	result, err := json.Marshal(value)
	if err != nil {
		return errorLine(fmt.Sprintf("method %s: encode result: %v", quote(req.Method), err))
	}
	b, err := json.Marshal(response{Result: result})
	if err != nil { // cannot happen: result is valid JSON
		return errorLine(fmt.Sprintf("method %s: encode response: %v", quote(req.Method), err))
	}
	return append(b, '\n')
}

// parseRequest checks a request line more strictly than encoding/json would: an object, keys
// matched case-sensitively, no unknown keys, a string method.
func parseRequest(line []byte) (request, error) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return request{}, fmt.Errorf(`empty request; send one JSON object per line, like {"method":"status"}`)
	}
	if line[0] != '{' {
		if json.Valid(line) {
			return request{}, fmt.Errorf(`invalid request: want a JSON object like {"method":"status"}`)
		}
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(line, &fields); err != nil {
		return request{}, fmt.Errorf("invalid JSON in request: %v", err)
	}
	var req request
	if raw, ok := fields["method"]; !ok {
		return request{}, fmt.Errorf(`invalid request: missing "method"`)
	} else if err := json.Unmarshal(raw, &req.Method); err != nil {
		return request{}, fmt.Errorf(`invalid request: "method" must be a string`)
	}
	var unknown []string
	for k := range fields {
		if k != "method" && k != "params" {
			unknown = append(unknown, quote(k))
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return request{}, fmt.Errorf("invalid request for method %s: unknown field %s (allowed: \"method\", \"params\")",
			quote(req.Method), strings.Join(unknown, ", "))
	}
	req.Params = fields["params"]
	return req, nil
}

// noParams accepts absent, null or empty-object params.
func noParams(raw json.RawMessage) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return fmt.Errorf(`"params" must be a JSON object`)
	}
	if len(m) > 0 {
		return fmt.Errorf("takes no params")
	}
	return nil
}

// errorLine encodes an error response line.
func errorLine(msg string) []byte {
	b, _ := json.Marshal(response{Error: msg}) // a struct of one string always encodes
	return append(b, '\n')
}

// quote quotes s for an error message, shortened so a huge name cannot bloat the response.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		// Cut on a rune boundary so the quoted text stays valid UTF-8.
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "..."
	}
	return strconv.Quote(s)
}
