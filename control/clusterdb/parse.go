package clusterdb

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"vigil/internal/yamlfile"

	"go.yaml.in/yaml/v3"
)

// aliasSteps bounds the work that aliases may add to walking a file. Without aliases the walk
// visits each node of the file once at most; aliases let a small file name the same large
// mapping many times, and a file whose aliases add more than this many steps is refused.
const aliasSteps = 1 << 16

// ParseConfig decodes and validates a cluster configuration; name stands for the file in error
// messages. Decoding is strict: unknown and duplicate keys, values of the wrong type or out of
// range, dangling references and dependency cycles are errors of the form
//
//	cluster.yaml:14: groups.web.resources.ip.requires: unknown resource "nic0"
//
// all reported together (errors.Join), in line order. On any error the Config is nil.
func ParseConfig(name string, data []byte) (*Config, error) {
	root, err := yamlfile.Decode(name, data)
	if err != nil {
		return nil, err
	}
	p := &parser{file: name, lines: map[string]int{"": root.Line}, maxSteps: countNodes(root) + aliasSteps}
	c := p.config(root)
	if !p.aborted {
		c.check(p.semantic)
	}
	if err := p.errs.Err(); err != nil {
		return nil, err
	}
	return c, nil
}

// parser walks the YAML tree of a cluster configuration. It records the line of every field it
// sees by path, so that the semantic rules of Config.check, which know only paths, can be
// reported with lines; and the paths where the structure was wrong, so that rules about values
// that could not be read are not reported a second time.
type parser struct {
	file     string
	errs     yamlfile.Errors
	lines    map[string]int  // path -> line of its key (or list item)
	broken   map[string]bool // paths with a structural error
	steps    int
	maxSteps int
	aborted  bool
}

// errorf records a structural error about the field at path, at the line of n, and marks the
// field as unreadable.
func (p *parser) errorf(n *yaml.Node, path, format string, args ...any) {
	p.mark(path)
	p.add(n.Line, path, fmt.Sprintf(format, args...))
}

// notef records an error about the field at path that leaves its value intact (an unknown or
// duplicate key, which is skipped).
func (p *parser) notef(n *yaml.Node, path, format string, args ...any) {
	p.add(n.Line, path, fmt.Sprintf(format, args...))
}

// mark records that the field at path could not be read.
func (p *parser) mark(path string) {
	if p.broken == nil {
		p.broken = make(map[string]bool)
	}
	p.broken[path] = true
}

func (p *parser) add(line int, path, msg string) {
	if path != "" {
		msg = path + ": " + msg
	}
	var err error
	if line > 0 {
		err = fmt.Errorf("%s:%d: %s", p.file, line, msg)
	} else {
		err = fmt.Errorf("%s: %s", p.file, msg)
	}
	p.errs.Add(line, err)
}

// semantic records a broken rule found by Config.check, unless it follows from a structural
// error already reported.
func (p *parser) semantic(pr problem) {
	at := pr.path
	if pr.item >= 0 {
		at = fmt.Sprintf("%s[%d]", pr.path, pr.item)
	}
	for b := range p.broken {
		if related(b, at) || pr.ref != "" && within(pr.ref, b) {
			return
		}
	}
	p.add(p.line(at), pr.path, pr.msg)
}

// within reports whether path is inner or equal to outer.
func within(path, outer string) bool {
	if outer == "" || path == outer {
		return true
	}
	return strings.HasPrefix(path, outer) && (path[len(outer)] == '.' || path[len(outer)] == '[')
}

// related reports whether one path is within the other.
func related(a, b string) bool { return within(a, b) || within(b, a) }

// line returns the line of path, or of its nearest ancestor whose line is known.
func (p *parser) line(path string) int {
	for {
		if l, ok := p.lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			return p.lines[""]
		}
		path = path[:i]
	}
}

// step counts work and reports false once the file has needed too much of it.
func (p *parser) step(n *yaml.Node) bool {
	p.steps++
	if p.steps > p.maxSteps && !p.aborted {
		p.aborted = true
		p.add(n.Line, "", "the file is too complex (aliases expand it beyond what a configuration needs)")
	}
	return !p.aborted
}

// countNodes returns the number of nodes in the tree under n, not following aliases.
func countNodes(n *yaml.Node) int {
	count := 0
	stack := []*yaml.Node{n}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = append(stack[:len(stack)-1], n.Content...)
		count++
	}
	return count
}

// entry is one key of a mapping with its value.
type entry struct {
	key  string
	k, v *yaml.Node
}

// mapping checks that n is a mapping whose keys are among known, each at most once, and returns
// its entries by key and true; false if n is not a mapping. path names n ("" at the top).
func (p *parser) mapping(n *yaml.Node, path string, known ...string) (map[string]entry, bool) {
	items, ok := p.entries(n, path, "a mapping")
	if !ok {
		return nil, false
	}
	fields := make(map[string]entry, len(items))
	for _, e := range items {
		if !slices.Contains(known, e.key) {
			msg := fmt.Sprintf("unknown key %q", e.key)
			if s := suggest(e.key, known); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			p.notef(e.k, path, "%s", msg)
			continue
		}
		fields[e.key] = e
	}
	return fields, true
}

// entries checks that n is a mapping with string keys, each at most once, and returns its entries
// in order, recording the line of each. what describes the expected mapping in errors.
func (p *parser) entries(n *yaml.Node, path, what string) ([]entry, bool) {
	n = yamlfile.Deref(n)
	if !p.step(n) {
		return nil, false
	}
	if n.Kind != yaml.MappingNode {
		p.errorf(n, path, "expected %s, got %s", what, yamlfile.Describe(n))
		return nil, false
	}
	var out []entry
	first := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := yamlfile.Deref(n.Content[i]), n.Content[i+1]
		if !p.step(k) {
			return nil, false
		}
		if k.ShortTag() == "!!merge" {
			p.notef(k, path, "merge keys (<<) are not supported")
			continue
		}
		if k.Kind != yaml.ScalarNode || !scalarText(k) {
			p.notef(k, path, "expected a name as key, got %s", yamlfile.Describe(k))
			continue
		}
		if line, dup := first[k.Value]; dup {
			p.notef(k, path, "duplicate key %q (first on line %d)", k.Value, line)
			continue
		}
		first[k.Value] = k.Line
		p.lines[join(path, k.Value)] = k.Line
		out = append(out, entry{k.Value, k, v})
	}
	return out, true
}

// require reports the keys of required missing from a mapping at path.
func (p *parser) require(n *yaml.Node, path string, fields map[string]entry, required ...string) {
	for _, k := range required {
		if _, ok := fields[k]; !ok {
			p.mark(join(path, k))
			line := yamlfile.Deref(n).Line
			if l, ok := p.lines[path]; ok && path != "" {
				line = l // the line of the key that names the mapping
			}
			p.add(line, path, fmt.Sprintf("missing required key %q", k))
		}
	}
}

// sequence checks that n is a list and returns its items, recording the line of each.
func (p *parser) sequence(n *yaml.Node, path string) ([]*yaml.Node, bool) {
	n = yamlfile.Deref(n)
	if !p.step(n) {
		return nil, false
	}
	if n.Kind != yaml.SequenceNode {
		p.errorf(n, path, "expected a list, got %s", yamlfile.Describe(n))
		return nil, false
	}
	for i, item := range n.Content {
		p.lines[fmt.Sprintf("%s[%d]", path, i)] = item.Line
	}
	return n.Content, true
}

// scalarText reports whether a scalar reads as text: strings, numbers, booleans and timestamps
// are taken as written; null, binary and custom tags are not.
func scalarText(n *yaml.Node) bool {
	switch n.ShortTag() {
	case "!!str", "!!int", "!!float", "!!bool", "!!timestamp":
		return true
	}
	return false
}

// str returns the text of a scalar.
func (p *parser) str(n *yaml.Node, path string) (string, bool) {
	n = yamlfile.Deref(n)
	if n.Kind == yaml.ScalarNode && scalarText(n) {
		return n.Value, true
	}
	p.errorf(n, path, "expected a string, got %s", yamlfile.Describe(n))
	return "", false
}

// strList returns a list of strings; nil for an empty list.
func (p *parser) strList(n *yaml.Node, path string) []string {
	items, ok := p.sequence(n, path)
	if !ok {
		return nil
	}
	var out []string
	for i, item := range items {
		if s, ok := p.str(item, fmt.Sprintf("%s[%d]", path, i)); ok {
			out = append(out, s)
		}
	}
	return out
}

// integer returns the value of an integer scalar.
func (p *parser) integer(n *yaml.Node, path string) (int64, bool) {
	n = yamlfile.Deref(n)
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
		p.errorf(n, path, "expected an integer, got %s", yamlfile.Describe(n))
		return 0, false
	}
	var v int64
	if err := n.Decode(&v); err != nil {
		p.errorf(n, path, "%s is out of range", n.Value)
		return 0, false
	}
	return v, true
}

// smallInt returns an integer scalar that fits an int; the range rules are Config.check's.
func (p *parser) smallInt(n *yaml.Node, path string) int {
	v, ok := p.integer(n, path)
	if !ok {
		return 0
	}
	if v < -1<<31 || v > 1<<31-1 {
		p.errorf(yamlfile.Deref(n), path, "%d is out of range", v)
		return 0
	}
	return int(v)
}

// boolean returns the value of a boolean scalar.
func (p *parser) boolean(n *yaml.Node, path string) bool {
	n = yamlfile.Deref(n)
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!bool" {
		var v bool
		if err := n.Decode(&v); err == nil {
			return v
		}
	}
	p.errorf(n, path, "expected true or false, got %s", yamlfile.Describe(n))
	return false
}

// duration sets *d to the value of a duration scalar ("10ms", or 0); it leaves *d alone on error.
func (p *parser) duration(n *yaml.Node, path string, d *time.Duration) {
	n = yamlfile.Deref(n)
	if n.Kind == yaml.ScalarNode && (n.ShortTag() == "!!str" || n.ShortTag() == "!!int") {
		if v, err := time.ParseDuration(n.Value); err == nil {
			*d = v
			return
		}
	}
	p.errorf(n, path, "expected a duration like 10ms, 250us or 1.5s, got %s", yamlfile.Describe(n))
}

// enum sets *v to a string scalar that must be one of values; it leaves *v (the default) alone
// and reports false on error.
func enum[T ~string](p *parser, n *yaml.Node, path, what string, v *T, values ...T) bool {
	s, ok := p.str(n, path)
	if !ok {
		return false
	}
	if !slices.Contains(values, T(s)) {
		names := make([]string, len(values))
		for i, v := range values {
			names[i] = string(v)
		}
		p.errorf(yamlfile.Deref(n), path, "%q is not %s (%s)", s, what, orList(names))
		return false
	}
	*v = T(s)
	return true
}

// value returns a parameter value of type t in canonical form; strings are taken as written.
func (p *parser) value(n *yaml.Node, path string, t ParamType) (string, bool) {
	n = yamlfile.Deref(n)
	switch t {
	case ParamInteger:
		if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!int" {
			var v int64
			if err := n.Decode(&v); err == nil {
				return strconv.FormatInt(v, 10), true
			}
		}
	case ParamBoolean:
		if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!bool" {
			var v bool
			if err := n.Decode(&v); err == nil {
				return strconv.FormatBool(v), true
			}
		}
	}
	s, ok := p.str(n, path)
	if !ok {
		return "", false
	}
	if canon, ok := canonicalValue(t, s); ok {
		return canon, true
	}
	p.errorf(n, path, "%s is not %s", yamlfile.Describe(n), typeArticle(t))
	return "", false
}

// config walks the top-level mapping.
func (p *parser) config(root *yaml.Node) *Config {
	c := &Config{Heartbeat: defaultHeartbeat}
	f, ok := p.mapping(root, "", "version", "heartbeat", "nodes", "resource_types", "groups", "drd_devices", "users")
	if !ok {
		return c
	}
	p.require(root, "", f, "version", "nodes")
	if e, ok := f["version"]; ok {
		c.Version = p.smallInt(e.v, "version")
		if c.Version > ConfigVersion {
			// Nothing else in a newer file can be judged by this build.
			p.errorf(yamlfile.Deref(e.v), "version", "version %d is newer than this build understands (%d); upgrade vigil",
				c.Version, ConfigVersion)
			p.aborted = true
			return c
		}
	}
	if e, ok := f["heartbeat"]; ok {
		p.heartbeat(e.v, &c.Heartbeat)
	}
	if e, ok := f["nodes"]; ok {
		c.Nodes = p.nodes(e.v)
	}
	if e, ok := f["resource_types"]; ok {
		c.ResourceTypes = p.resourceTypes(e.v)
	}
	if e, ok := f["groups"]; ok {
		c.Groups = p.groups(e.v, c)
	}
	if e, ok := f["drd_devices"]; ok {
		c.DRDDevices = p.drdDevices(e.v)
	}
	if e, ok := f["users"]; ok {
		c.Users = p.users(e.v)
	}
	return c
}

func (p *parser) heartbeat(n *yaml.Node, hb *Heartbeat) {
	f, ok := p.mapping(n, "heartbeat", "interval", "multiplier", "stall_timeout")
	if !ok {
		return
	}
	if e, ok := f["interval"]; ok {
		p.duration(e.v, "heartbeat.interval", &hb.Interval)
	}
	if e, ok := f["multiplier"]; ok {
		if v := p.smallInt(e.v, "heartbeat.multiplier"); v != 0 {
			hb.Multiplier = v
		}
	}
	if e, ok := f["stall_timeout"]; ok {
		p.duration(e.v, "heartbeat.stall_timeout", &hb.StallTimeout)
	}
}

func (p *parser) nodes(n *yaml.Node) []Node {
	items, ok := p.entries(n, "nodes", "a mapping from node names to nodes")
	if !ok {
		return nil
	}
	var out []Node
	for _, it := range items {
		path := "nodes." + it.key
		node := Node{Name: it.key, Role: RoleMember}
		if f, ok := p.mapping(it.v, path, "id", "role"); ok {
			p.require(it.v, path, f, "id")
			if e, ok := f["id"]; ok {
				node.ID = p.smallInt(e.v, path+".id")
			}
			if e, ok := f["role"]; ok {
				enum(p, e.v, path+".role", "a role", &node.Role, RoleMember, RoleWitness)
			}
		}
		out = append(out, node)
	}
	return out
}

func (p *parser) resourceTypes(n *yaml.Node) []ResourceType {
	items, ok := p.entries(n, "resource_types", "a mapping from type names to resource types")
	if !ok {
		return nil
	}
	var out []ResourceType
	for _, it := range items {
		path := "resource_types." + it.key
		t := ResourceType{Name: it.key, Category: CategoryOnOff}
		if f, ok := p.mapping(it.v, path, "agent", "category", "parameters"); ok {
			p.require(it.v, path, f, "agent")
			if e, ok := f["agent"]; ok {
				t.Agent, _ = p.str(e.v, path+".agent")
			}
			if e, ok := f["category"]; ok {
				enum(p, e.v, path+".category", "a category", &t.Category,
					CategoryOnOff, CategoryOnOnly, CategoryPersistent)
			}
			if e, ok := f["parameters"]; ok {
				t.Parameters = p.parameters(e.v, path+".parameters")
			}
		}
		out = append(out, t)
	}
	return out
}

func (p *parser) parameters(n *yaml.Node, path string) []Parameter {
	items, ok := p.entries(n, path, "a mapping from parameter names to parameters")
	if !ok {
		return nil
	}
	var out []Parameter
	for _, it := range items {
		ppath := path + "." + it.key
		par := Parameter{Name: it.key, Type: ParamString}
		if f, ok := p.mapping(it.v, ppath, "type", "required", "default"); ok {
			if e, ok := f["type"]; ok {
				if !enum(p, e.v, ppath+".type", "a parameter type", &par.Type,
					ParamString, ParamInteger, ParamBoolean, ParamDuration) {
					p.mark(ppath + ".default")
				}
			}
			if e, ok := f["required"]; ok {
				par.Required = p.boolean(e.v, ppath+".required")
			}
			if e, ok := f["default"]; ok && !p.broken[ppath+".default"] {
				par.Default, _ = p.value(e.v, ppath+".default", par.Type)
			}
		}
		out = append(out, par)
	}
	return out
}

func (p *parser) groups(n *yaml.Node, c *Config) []Group {
	items, ok := p.entries(n, "groups", "a mapping from group names to service groups")
	if !ok {
		return nil
	}
	var out []Group
	for _, it := range items {
		path := "groups." + it.key
		g := Group{Name: it.key, Kind: GroupFailover, AutoStart: true}
		if f, ok := p.mapping(it.v, path, "kind", "nodes", "autostart", "resources"); ok {
			p.require(it.v, path, f, "nodes")
			if e, ok := f["kind"]; ok {
				enum(p, e.v, path+".kind", "a group kind", &g.Kind, GroupFailover, GroupParallel)
			}
			if e, ok := f["nodes"]; ok {
				g.Nodes = p.strList(e.v, path+".nodes")
			}
			if e, ok := f["autostart"]; ok {
				g.AutoStart = p.boolean(e.v, path+".autostart")
			}
			if e, ok := f["resources"]; ok {
				g.Resources = p.resources(e.v, path+".resources", c)
			}
		}
		out = append(out, g)
	}
	return out
}

func (p *parser) resources(n *yaml.Node, path string, c *Config) []Resource {
	items, ok := p.entries(n, path, "a mapping from resource names to resources")
	if !ok {
		return nil
	}
	var out []Resource
	for _, it := range items {
		rpath := path + "." + it.key
		r := Resource{Name: it.key}
		if f, ok := p.mapping(it.v, rpath, "type", "params", "requires"); ok {
			p.require(it.v, rpath, f, "type")
			if e, ok := f["type"]; ok {
				r.Type, _ = p.str(e.v, rpath+".type")
			}
			if e, ok := f["params"]; ok {
				r.Params = p.params(e.v, rpath+".params", c, r.Type)
			}
			if e, ok := f["requires"]; ok {
				r.Requires = p.strList(e.v, rpath+".requires")
			}
		}
		out = append(out, r)
	}
	return out
}

// params walks the values of a resource; those of parameters its type declares are read as
// the parameter's type, the others as strings (Config.check reports them).
func (p *parser) params(n *yaml.Node, path string, c *Config, typ string) map[string]string {
	items, ok := p.entries(n, path, "a mapping from parameter names to values")
	if !ok {
		return nil
	}
	t, _ := c.ResourceType(typ)
	var out map[string]string
	for _, it := range items {
		pt := ParamString
		if t != nil {
			if par, ok := t.Parameter(it.key); ok && par.Type != "" {
				pt = par.Type
			}
		}
		v, ok := p.value(it.v, path+"."+it.key, pt)
		if !ok {
			continue
		}
		if out == nil {
			out = make(map[string]string)
		}
		out[it.key] = v
	}
	return out
}

func (p *parser) drdDevices(n *yaml.Node) []DRDDevice {
	items, ok := p.entries(n, "drd_devices", "a mapping from device names to devices")
	if !ok {
		return nil
	}
	var out []DRDDevice
	for _, it := range items {
		path := "drd_devices." + it.key
		d := DRDDevice{Name: it.key}
		if f, ok := p.mapping(it.v, path, "backing", "nodes", "size"); ok {
			p.require(it.v, path, f, "backing", "nodes")
			if e, ok := f["backing"]; ok {
				d.Backing, _ = p.str(e.v, path+".backing")
			}
			if e, ok := f["nodes"]; ok {
				d.Nodes = p.strList(e.v, path+".nodes")
			}
			if e, ok := f["size"]; ok {
				if v, ok := p.integer(e.v, path+".size"); ok {
					if v <= 0 {
						p.errorf(e.v, path+".size", "%d is not a positive size in bytes", v)
					} else {
						d.Size = uint64(v)
					}
				}
			}
		}
		out = append(out, d)
	}
	return out
}

func (p *parser) users(n *yaml.Node) []User {
	items, ok := p.entries(n, "users", "a mapping from user names to users")
	if !ok {
		return nil
	}
	var out []User
	for _, it := range items {
		path := "users." + it.key
		u := User{Name: it.key, Role: UserGuest}
		if f, ok := p.mapping(it.v, path, "role"); ok {
			if e, ok := f["role"]; ok {
				enum(p, e.v, path+".role", "a user role", &u.Role, UserAdmin, UserOperator, UserGuest)
			}
		}
		out = append(out, u)
	}
	return out
}

// join appends a key to a path.
func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// orList writes "a, b or c".
func orList(values []string) string {
	if len(values) < 2 {
		return strings.Join(values, "")
	}
	return strings.Join(values[:len(values)-1], ", ") + " or " + values[len(values)-1]
}

// suggest returns the known key closest to an unknown one, if it is close enough to be a typo.
func suggest(key string, known []string) string {
	best, bestDist := "", 3
	for _, k := range known {
		if d := editDistance(key, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of two short strings.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
