// Package yamlfile reads configuration files written in YAML for strict decoders: one document
// per file, errors of the YAML library rewritten as "file:line: message", and a collector that
// reports a file's errors together in line order. The decoders (node configuration, cluster
// configuration) walk the returned yaml.Node themselves so that every error names its line.
package yamlfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Decode parses data, which must hold exactly one non-empty YAML document, and returns its root
// node. file names the data in errors.
func Decode(file string, data []byte) (root *yaml.Node, err error) {
	defer func() {
		// The YAML parser panics with an "internal error" on a few malformed inputs instead of
		// returning an error; a bad file must be reported, not crash the daemon.
		if r := recover(); r != nil {
			root, err = nil, fmt.Errorf("%s: malformed YAML: %v", file, r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: empty configuration", file)
		}
		return nil, libraryError(file, err)
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, libraryError(file, err)
	default:
		return nil, fmt.Errorf("%s:%d: a second YAML document; the file must hold only one", file, next.Line)
	}
	root = &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind == 0 || root.ShortTag() == "!!null" {
		return nil, fmt.Errorf("%s: empty configuration", file)
	}
	return root, nil
}

// parserProblems are the errors of the YAML library's parser (parserc.go), as opposed to its
// scanner. The library reports their line 0-based (it adds one for scanner errors only) and
// leaves the line out when that is 0.
var parserProblems = []string{
	"did not find expected <stream-start>",
	"did not find expected <document start>",
	"found undefined tag handle",
	"did not find expected node content",
	"did not find expected '-' indicator",
	"did not find expected key",
	"did not find expected ',' or ']'",
	"did not find expected ',' or '}'",
	"found duplicate %YAML directive",
	"found incompatible YAML document",
	"found duplicate %TAG directive",
}

// libraryError rewrites an error of the YAML library, "yaml: line 3: msg", as "file:3: msg",
// with the line of a parser error made 1-based.
func libraryError(file string, err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, text, ok := strings.Cut(rest, ": "); ok {
			if n, err := strconv.Atoi(num); err == nil {
				line, msg = n, text
			}
		}
	}
	if slices.Contains(parserProblems, msg) {
		line++
	}
	if line > 0 {
		return fmt.Errorf("%s:%d: %s", file, line, msg)
	}
	return fmt.Errorf("%s: %s", file, msg)
}

// Errors collects the errors found in a file with their lines.
type Errors struct {
	errs []lineError
}

type lineError struct {
	line int
	err  error
}

// Add records err, found at line.
func (e *Errors) Add(line int, err error) { e.errs = append(e.errs, lineError{line, err}) }

// Len is the number of errors recorded.
func (e *Errors) Len() int { return len(e.errs) }

// Err returns the recorded errors joined in line order (stable for equal lines), or nil.
func (e *Errors) Err() error {
	if len(e.errs) == 0 {
		return nil
	}
	sorted := slices.Clone(e.errs)
	slices.SortStableFunc(sorted, func(a, b lineError) int { return a.line - b.line })
	errs := make([]error, len(sorted))
	for i, le := range sorted {
		errs[i] = le.err
	}
	return errors.Join(errs...)
}

// Deref follows an alias to the node it names.
func Deref(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// Describe names a node's value for error messages: "a mapping", "a list", "null", a quoted
// string, or a number or boolean as written.
func Describe(n *yaml.Node) string {
	n = Deref(n)
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return "null"
		case "!!str":
			return strconv.Quote(n.Value)
		case "!!int", "!!float", "!!bool":
			return n.Value
		}
		return n.ShortTag() + " " + strconv.Quote(n.Value)
	}
	return "nothing"
}
