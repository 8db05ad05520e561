package clusterdb

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"vigil/internal/nodeconf"
)

// ConfigVersion is the version of the cluster configuration schema this build reads and writes
// (the "version" key of cluster.yaml). A file or command carrying a higher version needs a newer
// build.
const ConfigVersion = 1

// Limits of the configuration. Node ids and the heartbeat bounds are those of the node
// configuration (internal/nodeconf), which in turn restate the heartbeat frame format.
const (
	MaxNodeID       = nodeconf.MaxNodeID // node ids are 1..MaxNodeID
	MaxNameLen      = 63                 // names of nodes, groups, resources, types, devices, users
	MaxStallTimeout = time.Hour
	maxTextLen      = 4096    // parameter values, defaults, agents and paths
	MaxDRDSize      = 1 << 60 // the largest size of a DRD device, in bytes
)

// Config is the declarative cluster configuration: what an administrator writes in cluster.yaml
// and commits with `vigil config apply`. ParseConfig returns it with every default filled in;
// Validate checks one built in Go. Collections keep the order of the file; names are unique
// within a collection.
type Config struct {
	Version       int            `json:"version"`
	Heartbeat     Heartbeat      `json:"heartbeat"`
	Nodes         []Node         `json:"nodes"`
	ResourceTypes []ResourceType `json:"resource_types,omitempty"`
	Groups        []Group        `json:"groups,omitempty"`
	DRDDevices    []DRDDevice    `json:"drd_devices,omitempty"`
	Users         []User         `json:"users,omitempty"`
}

// Heartbeat is the cluster-wide heartbeat profile. It is informational: each node's own
// node.yaml decides its timing; tools show this profile as the cluster's intended one.
type Heartbeat struct {
	Interval     time.Duration `json:"interval"`
	Multiplier   int           `json:"multiplier"`
	StallTimeout time.Duration `json:"stall_timeout"`
}

// defaultHeartbeat is the profile of a configuration without a heartbeat section: the defaults
// of node.yaml.
var defaultHeartbeat = Heartbeat{
	Interval:     nodeconf.DefaultInterval,
	Multiplier:   nodeconf.DefaultMultiplier,
	StallTimeout: nodeconf.DefaultStallTimeout,
}

// Node is a node of the cluster. Its name is the name in its node.yaml.
type Node struct {
	Name string `json:"name"`
	ID   int    `json:"id"`
	Role Role   `json:"role"`
}

// Role is what a node does in the cluster.
type Role string

// The roles.
const (
	// RoleMember hosts services, votes and stores the log (the default).
	RoleMember Role = "member"
	// RoleWitness votes and stores the log but hosts no services (a quorum server).
	RoleWitness Role = "witness"
)

// ResourceType describes a kind of resource, as a VCS types.cf entry does: the agent that
// controls it, its category and its parameters.
type ResourceType struct {
	Name string `json:"name"`
	// Agent is "builtin:ip", "builtin:process", "builtin:mount", "ocf:PROVIDER:NAME" (an OCF
	// resource agent) or "script:/absolute/path" (a method script).
	Agent      string      `json:"agent"`
	Category   Category    `json:"category"`
	Parameters []Parameter `json:"parameters,omitempty"`
}

// Builtin agents.
var builtinAgents = []string{"builtin:ip", "builtin:process", "builtin:mount"}

// Category says whether the cluster starts and stops resources of a type (VCS resource
// categories).
type Category string

// The categories.
const (
	CategoryOnOff      Category = "on-off"     // started and stopped (the default)
	CategoryOnOnly     Category = "on-only"    // started when needed, never stopped
	CategoryPersistent Category = "persistent" // only monitored: never started or stopped
)

// Parameter is one parameter of a resource type.
type Parameter struct {
	Name     string    `json:"name"`
	Type     ParamType `json:"type"`
	Required bool      `json:"required,omitempty"`
	// Default is the value of an optional parameter that a resource leaves out, in canonical
	// form; empty means none (the agent's own default applies). A required parameter has none.
	Default string `json:"default,omitempty"`
}

// ParamType is the type of a parameter's values. Values are kept as text in canonical form:
// decimal integers, "true"/"false", and durations as time.Duration.String writes them.
type ParamType string

// The parameter types.
const (
	ParamString   ParamType = "string" // the default
	ParamInteger  ParamType = "integer"
	ParamBoolean  ParamType = "boolean"
	ParamDuration ParamType = "duration"
)

// Group is a service group: resources that run together on one node (failover) or on every node
// of its list (parallel).
type Group struct {
	Name string    `json:"name"`
	Kind GroupKind `json:"kind"`
	// Nodes is the ordered preference list of node names: the group runs on the first one that
	// can host it. Witnesses are not allowed.
	Nodes []string `json:"nodes"`
	// AutoStart starts the group when the cluster forms (VCS AutoStart); default true.
	AutoStart bool       `json:"autostart"`
	Resources []Resource `json:"resources,omitempty"`
}

// GroupKind is how a group runs.
type GroupKind string

// The group kinds.
const (
	GroupFailover GroupKind = "failover" // on one node at a time (the default)
	GroupParallel GroupKind = "parallel" // on every node of its list at once
)

// Resource is one resource of a group.
type Resource struct {
	Name string `json:"name"`
	Type string `json:"type"` // the name of a ResourceType
	// Params holds the values given in the file, in canonical form (see ParamType); defaults
	// of the type are not filled in here, see Config.Params.
	Params map[string]string `json:"params,omitempty"`
	// Requires names resources of the same group that must be online before this one starts
	// (its children, in VCS terms). The graph is acyclic.
	Requires []string `json:"requires,omitempty"`
}

// DRDDevice is a distributed raw disk: a backing file or block device served to the cluster by
// one of Nodes at a time.
type DRDDevice struct {
	Name    string   `json:"name"`
	Backing string   `json:"backing"` // absolute path on the serving node
	Nodes   []string `json:"nodes"`   // nodes that can serve it, in order of preference
	// Size is the device's size in bytes, a multiple of DRDBlockSize; 0: the size of the
	// backing. A server refuses a backing smaller than Size.
	Size uint64 `json:"size,omitempty"`
}

// User is a cluster user with a role of the VCS privilege model.
type User struct {
	Name string   `json:"name"`
	Role UserRole `json:"role"`
}

// UserRole is a user's privilege level.
type UserRole string

// The user roles, from most to least privileged.
const (
	// UserAdmin may do everything, including changing the configuration and users.
	UserAdmin UserRole = "admin"
	// UserOperator may operate groups and resources (online, offline, switch, freeze) but not
	// change the configuration.
	UserOperator UserRole = "operator"
	// UserGuest has read-only access (the default).
	UserGuest UserRole = "guest"
)

// Node returns the node named name.
func (c *Config) Node(name string) (Node, bool) {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return Node{}, false
}

// NodeByID returns the node with the id.
func (c *Config) NodeByID(id int) (Node, bool) {
	for _, n := range c.Nodes {
		if n.ID == id {
			return n, true
		}
	}
	return Node{}, false
}

// Group returns the group named name.
func (c *Config) Group(name string) (*Group, bool) {
	for i := range c.Groups {
		if c.Groups[i].Name == name {
			return &c.Groups[i], true
		}
	}
	return nil, false
}

// ResourceType returns the resource type named name.
func (c *Config) ResourceType(name string) (*ResourceType, bool) {
	for i := range c.ResourceTypes {
		if c.ResourceTypes[i].Name == name {
			return &c.ResourceTypes[i], true
		}
	}
	return nil, false
}

// Resource returns the resource of the group named name.
func (g *Group) Resource(name string) (*Resource, bool) {
	for i := range g.Resources {
		if g.Resources[i].Name == name {
			return &g.Resources[i], true
		}
	}
	return nil, false
}

// Parameter returns the parameter named name.
func (t *ResourceType) Parameter(name string) (Parameter, bool) {
	for _, p := range t.Parameters {
		if p.Name == name {
			return p, true
		}
	}
	return Parameter{}, false
}

// Params returns the parameters an agent gets for a resource: the values of the resource, and
// the defaults of its type for those it leaves out. It reports false if there is no such
// group, resource or type.
func (c *Config) Params(group, resource string) (map[string]string, bool) {
	g, ok := c.Group(group)
	if !ok {
		return nil, false
	}
	r, ok := g.Resource(resource)
	if !ok {
		return nil, false
	}
	t, ok := c.ResourceType(r.Type)
	if !ok {
		return nil, false
	}
	out := make(map[string]string, len(t.Parameters))
	for _, p := range t.Parameters {
		if p.Default != "" {
			out[p.Name] = p.Default
		}
	}
	for k, v := range r.Params {
		out[k] = v
	}
	return out, true
}

// ErrInvalidConfig is wrapped by every error of Validate.
var ErrInvalidConfig = errors.New("invalid cluster configuration")

// Validate checks every rule of the configuration that does not depend on how it was written:
// names, ranges, enumerations, references between sections, parameters against their types and
// acyclic dependencies. ParseConfig applies the same rules and adds file and line; Apply checks
// again. The errors, one per line, name the field by path (groups.web.resources.ip.requires)
// and wrap ErrInvalidConfig.
func (c *Config) Validate() error {
	if c == nil {
		return fmt.Errorf("%w: no configuration", ErrInvalidConfig)
	}
	var errs []error
	c.check(func(p problem) {
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrInvalidConfig, p.path, p.msg))
	})
	return errors.Join(errs...)
}

// problem is one broken rule found by check. path names the field; item, when not -1, is the
// index of the offending entry in a list field (for the line number only); ref, when not empty,
// is the section the rule refers to (a problem about a reference is not worth reporting when
// the referenced section could not be read at all).
type problem struct {
	path string
	item int
	ref  string
	msg  string
}

// check reports every broken rule of c, in a fixed order.
func (c *Config) check(report func(problem)) {
	bad := func(path, format string, args ...any) {
		report(problem{path: path, item: -1, msg: fmt.Sprintf(format, args...)})
	}
	badItem := func(path string, item int, ref, format string, args ...any) {
		report(problem{path: path, item: item, ref: ref, msg: fmt.Sprintf(format, args...)})
	}

	switch {
	case c.Version > ConfigVersion:
		bad("version", "version %d is newer than this build understands (%d); upgrade vigil", c.Version, ConfigVersion)
	case c.Version != ConfigVersion:
		bad("version", "%d is not a valid version (this build reads version %d)", c.Version, ConfigVersion)
	}

	hb := c.Heartbeat
	hbOK := true
	if hb.Interval < nodeconf.MinInterval || hb.Interval > nodeconf.MaxInterval {
		bad("heartbeat.interval", "%v is out of range (%v..%v)", hb.Interval, nodeconf.MinInterval, nodeconf.MaxInterval)
		hbOK = false
	}
	if hb.Multiplier < nodeconf.MinMultiplier || hb.Multiplier > nodeconf.MaxMultiplier {
		bad("heartbeat.multiplier", "%d is out of range (%d..%d)", hb.Multiplier, nodeconf.MinMultiplier, nodeconf.MaxMultiplier)
		hbOK = false
	}
	if hb.StallTimeout <= 0 || hb.StallTimeout > MaxStallTimeout {
		bad("heartbeat.stall_timeout", "%v is out of range (above 0, at most %v)", hb.StallTimeout, MaxStallTimeout)
	} else if detect := hb.Interval * time.Duration(hb.Multiplier); hbOK && hb.StallTimeout <= detect {
		bad("heartbeat.stall_timeout", "%v must exceed interval*multiplier (%v)", hb.StallTimeout, detect)
	}

	// Nodes.
	nodes := make(map[string]Node, len(c.Nodes))
	ids := make(map[int]string, len(c.Nodes))
	members := 0
	if len(c.Nodes) == 0 {
		bad("nodes", "at least one node is required")
	}
	for _, n := range c.Nodes {
		path := "nodes." + n.Name
		if !validNodeName(n.Name) {
			bad(path, "%q is not a valid node name (1..63 characters from a-z, 0-9 and -)", n.Name)
		}
		if _, dup := nodes[n.Name]; dup {
			bad(path, "duplicate node name %q", n.Name)
		} else {
			nodes[n.Name] = n
		}
		if n.ID < 1 || n.ID > MaxNodeID {
			bad(path+".id", "%d is not a valid node id (1..%d)", n.ID, MaxNodeID)
		} else if other, dup := ids[n.ID]; dup {
			bad(path+".id", "node id %d is already used by node %s", n.ID, other)
		} else {
			ids[n.ID] = n.Name
		}
		switch n.Role {
		case RoleMember:
			members++
		case RoleWitness:
		default:
			bad(path+".role", "%q is not a role (member or witness)", n.Role)
		}
	}
	if len(c.Nodes) > 0 && members == 0 {
		bad("nodes", "at least one node must have role member (witnesses host no services)")
	}
	// nodeList checks a list of node names that may host services.
	nodeList := func(path string, list []string) {
		if len(list) == 0 {
			bad(path, "at least one node is required")
		}
		seen := make(map[string]bool, len(list))
		for i, name := range list {
			n, ok := nodes[name]
			switch {
			case !ok:
				badItem(path, i, "nodes", "unknown node %q", name)
			case seen[name]:
				badItem(path, i, "", "node %q is listed twice", name)
			case n.Role == RoleWitness:
				badItem(path, i, "", "node %q is a witness; witnesses host no services", name)
			}
			seen[name] = true
		}
	}

	// Resource types.
	types := make(map[string]*ResourceType, len(c.ResourceTypes))
	for i := range c.ResourceTypes {
		t := &c.ResourceTypes[i]
		path := "resource_types." + t.Name
		if !validName(t.Name) {
			bad(path, "%q is not a valid resource type name (%s)", t.Name, nameRule)
		}
		if _, dup := types[t.Name]; dup {
			bad(path, "duplicate resource type %q", t.Name)
		} else {
			types[t.Name] = t
		}
		if msg := checkAgent(t.Agent); msg != "" {
			bad(path+".agent", "%s", msg)
		}
		switch t.Category {
		case CategoryOnOff, CategoryOnOnly, CategoryPersistent:
		default:
			bad(path+".category", "%q is not a category (on-off, on-only or persistent)", t.Category)
		}
		params := make(map[string]bool, len(t.Parameters))
		for _, p := range t.Parameters {
			ppath := path + ".parameters." + p.Name
			if !validParamName(p.Name) {
				bad(ppath, "%q is not a valid parameter name (1..63 characters from A-Z, a-z, 0-9 and _, not starting with a digit)", p.Name)
			}
			if params[p.Name] {
				bad(ppath, "duplicate parameter %q", p.Name)
			}
			params[p.Name] = true
			typeOK := true
			switch p.Type {
			case ParamString, ParamInteger, ParamBoolean, ParamDuration:
			default:
				bad(ppath+".type", "%q is not a parameter type (string, integer, boolean or duration)", p.Type)
				typeOK = false
			}
			if p.Default != "" {
				switch {
				case p.Required:
					bad(ppath+".default", "a required parameter has no default")
				case typeOK:
					if msg := checkValue(p.Type, p.Default); msg != "" {
						bad(ppath+".default", "%s", msg)
					}
				}
			}
		}
	}

	// Groups.
	groups := make(map[string]bool, len(c.Groups))
	for gi := range c.Groups {
		g := &c.Groups[gi]
		path := "groups." + g.Name
		if !validName(g.Name) {
			bad(path, "%q is not a valid group name (%s)", g.Name, nameRule)
		}
		if groups[g.Name] {
			bad(path, "duplicate group %q", g.Name)
		}
		groups[g.Name] = true
		switch g.Kind {
		case GroupFailover, GroupParallel:
		default:
			bad(path+".kind", "%q is not a group kind (failover or parallel)", g.Kind)
		}
		nodeList(path+".nodes", g.Nodes)
		res := make(map[string]int, len(g.Resources))
		for ri, r := range g.Resources {
			rpath := path + ".resources." + r.Name
			if !validName(r.Name) {
				bad(rpath, "%q is not a valid resource name (%s)", r.Name, nameRule)
			}
			if _, dup := res[r.Name]; dup {
				bad(rpath, "duplicate resource %q in group %s", r.Name, g.Name)
			} else {
				res[r.Name] = ri
			}
			t, ok := types[r.Type]
			if !ok {
				report(problem{path: rpath + ".type", item: -1, ref: "resource_types",
					msg: fmt.Sprintf("unknown resource type %q", r.Type)})
			} else {
				checkParams(rpath+".params", r.Params, t, bad)
			}
		}
		for _, r := range g.Resources {
			rpath := path + ".resources." + r.Name + ".requires"
			seen := make(map[string]bool, len(r.Requires))
			for i, dep := range r.Requires {
				switch _, ok := res[dep]; {
				case !ok:
					badItem(rpath, i, path+".resources", "unknown resource %q", dep)
				case seen[dep]:
					badItem(rpath, i, "", "resource %q is listed twice", dep)
				}
				seen[dep] = true
			}
		}
		for _, cyc := range cycles(g.Resources, res) {
			bad(path+".resources."+cyc[0]+".requires", "dependency cycle %s", strings.Join(cyc, " -> "))
		}
	}

	// DRD devices.
	devs := make(map[string]bool, len(c.DRDDevices))
	backings := make(map[string]string, len(c.DRDDevices))
	for _, d := range c.DRDDevices {
		path := "drd_devices." + d.Name
		if !validName(d.Name) {
			bad(path, "%q is not a valid device name (%s)", d.Name, nameRule)
		}
		if devs[d.Name] {
			bad(path, "duplicate device %q", d.Name)
		}
		devs[d.Name] = true
		if msg := checkPath(d.Backing); msg != "" {
			bad(path+".backing", "%s", msg)
		} else if other, dup := backings[d.Backing]; dup {
			bad(path+".backing", "%s is already the backing of drd_devices.%s", d.Backing, other)
		} else {
			backings[d.Backing] = d.Name
		}
		nodeList(path+".nodes", d.Nodes)
		if d.Size%DRDBlockSize != 0 || d.Size > MaxDRDSize {
			bad(path+".size", "%d is not a multiple of %d bytes up to %d", d.Size, DRDBlockSize, uint64(MaxDRDSize))
		}
	}

	// Users.
	users := make(map[string]bool, len(c.Users))
	for _, u := range c.Users {
		path := "users." + u.Name
		if !validName(u.Name) {
			bad(path, "%q is not a valid user name (%s)", u.Name, nameRule)
		}
		if users[u.Name] {
			bad(path, "duplicate user %q", u.Name)
		}
		users[u.Name] = true
		switch u.Role {
		case UserAdmin, UserOperator, UserGuest:
		default:
			bad(path+".role", "%q is not a user role (admin, operator or guest)", u.Role)
		}
	}
}

// checkParams checks the values of a resource against its type.
func checkParams(path string, params map[string]string, t *ResourceType, bad func(string, string, ...any)) {
	for _, k := range sortedKeys(params) {
		p, ok := t.Parameter(k)
		if !ok {
			names := make([]string, len(t.Parameters))
			for i, p := range t.Parameters {
				names[i] = p.Name
			}
			has := "has no parameters"
			if len(names) > 0 {
				has = "has " + strings.Join(names, ", ")
			}
			bad(path+"."+k, "not a parameter of type %s (it %s)", t.Name, has)
			continue
		}
		if msg := checkValue(p.Type, params[k]); msg != "" {
			bad(path+"."+k, "%s", msg)
		}
	}
	for _, p := range t.Parameters {
		if _, ok := params[p.Name]; p.Required && !ok {
			bad(path, "missing required parameter %q of type %s", p.Name, t.Name)
		}
	}
}

// checkValue checks a parameter value in canonical form; it returns what is wrong, or "".
func checkValue(t ParamType, v string) string {
	if msg := checkText(v); msg != "" {
		return msg
	}
	if canon, ok := canonicalValue(t, v); !ok {
		return fmt.Sprintf("%s is not %s", quoteIfNeeded(v), typeArticle(t))
	} else if canon != v {
		return fmt.Sprintf("%s is not in canonical form (%s)", quoteIfNeeded(v), canon)
	}
	return ""
}

// canonicalValue returns the canonical text of a value of type t.
func canonicalValue(t ParamType, v string) (string, bool) {
	switch t {
	case ParamInteger:
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return "", false
		}
		return strconv.FormatInt(n, 10), true
	case ParamBoolean:
		switch v {
		case "true", "True", "TRUE":
			return "true", true
		case "false", "False", "FALSE":
			return "false", true
		}
		return "", false
	case ParamDuration:
		d, err := time.ParseDuration(v)
		if err != nil {
			return "", false
		}
		return d.String(), true
	default:
		return v, true
	}
}

func typeArticle(t ParamType) string {
	switch t {
	case ParamInteger:
		return "an integer"
	case ParamBoolean:
		return "a boolean (true or false)"
	case ParamDuration:
		return "a duration like 500ms or 30s"
	}
	return "a " + string(t)
}

// checkText rejects text that could not be written back faithfully or would be unsafe in an
// agent's environment: invalid UTF-8, control characters, or too long.
func checkText(s string) string {
	switch {
	case !utf8.ValidString(s):
		return fmt.Sprintf("%q is not valid UTF-8", s)
	case strings.ContainsFunc(s, unicode.IsControl):
		return fmt.Sprintf("%q contains a control character", s)
	case len(s) > maxTextLen:
		return fmt.Sprintf("%d bytes long, at most %d are allowed", len(s), maxTextLen)
	}
	return ""
}

// checkPath checks an absolute, clean file system path.
func checkPath(s string) string {
	if msg := checkText(s); msg != "" {
		return msg
	}
	switch {
	case s == "":
		return "empty path"
	case !filepath.IsAbs(s):
		return fmt.Sprintf("%q is not an absolute path", s)
	case filepath.Clean(s) != s:
		return fmt.Sprintf("%q is not a clean path (%s)", s, filepath.Clean(s))
	}
	return ""
}

// checkAgent checks an agent reference; it returns what is wrong, or "".
func checkAgent(a string) string {
	const forms = "builtin:ip, builtin:process, builtin:mount, ocf:PROVIDER:NAME or script:/path"
	if msg := checkText(a); msg != "" {
		return msg
	}
	kind, rest, _ := strings.Cut(a, ":")
	switch kind {
	case "builtin":
		if !slices.Contains(builtinAgents, a) {
			return fmt.Sprintf("%q is not a built-in agent (builtin:ip, builtin:process or builtin:mount)", a)
		}
	case "ocf":
		provider, name, ok := strings.Cut(rest, ":")
		if !ok || !validOCFName(provider) || !validOCFName(name) {
			return fmt.Sprintf("%q is not an OCF agent (ocf:PROVIDER:NAME, each of A-Z, a-z, 0-9, ., _ and -)", a)
		}
	case "script":
		if msg := checkPath(rest); msg != "" {
			return fmt.Sprintf("%q: %s", a, msg)
		}
	default:
		return fmt.Sprintf("%q is not an agent (%s)", a, forms)
	}
	return ""
}

func validOCFName(s string) bool {
	if s == "" || len(s) > MaxNameLen || s == "." || s == ".." {
		return false
	}
	for _, c := range []byte(s) {
		if !isAlnum(c) && c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

const nameRule = "1..63 characters from a-z, 0-9, - and _, starting with a letter or digit"

// validName is the rule for names of groups, resources, resource types, devices and users.
func validName(s string) bool {
	if len(s) < 1 || len(s) > MaxNameLen {
		return false
	}
	for i, c := range []byte(s) {
		lower := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if !lower && (i == 0 || c != '-' && c != '_') {
			return false
		}
	}
	return true
}

// validNodeName is the rule of node names in node.yaml.
func validNodeName(s string) bool {
	if len(s) < 1 || len(s) > MaxNameLen {
		return false
	}
	for _, c := range []byte(s) {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

// validParamName accepts names that can follow OCF_RESKEY_ in an environment variable.
func validParamName(s string) bool {
	if len(s) < 1 || len(s) > MaxNameLen || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for _, c := range []byte(s) {
		if !isAlnum(c) && c != '_' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// cycles returns the dependency cycles among a group's resources, each as a path that starts
// and ends with the same resource, in a fixed order. index maps names to positions; requires of
// unknown resources are ignored (reported elsewhere). Each cycle is reported once, found by a
// depth-first search from the resources in file order.
func cycles(res []Resource, index map[string]int) [][]string {
	const (
		white = iota
		grey
		black
	)
	color := make([]int, len(res))
	var stack []int
	var out [][]string
	var visit func(i int)
	visit = func(i int) {
		color[i] = grey
		stack = append(stack, i)
		for _, dep := range res[i].Requires {
			j, ok := index[dep]
			if !ok {
				continue
			}
			switch color[j] {
			case white:
				visit(j)
			case grey:
				start := slices.Index(stack, j)
				cyc := make([]string, 0, len(stack)-start+1)
				for _, k := range stack[start:] {
					cyc = append(cyc, res[k].Name)
				}
				out = append(out, append(cyc, res[j].Name))
			}
		}
		stack = stack[:len(stack)-1]
		color[i] = black
	}
	for i := range res {
		// A duplicate name maps to its first resource; skip the duplicates.
		if color[i] == white && index[res[i].Name] == i {
			visit(i)
		}
	}
	return out
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// quoteIfNeeded writes a value for messages: as is when it is plain, else quoted.
func quoteIfNeeded(s string) string {
	if s == "" || strings.ContainsAny(s, " \t\"'`,[]{}#:\\") || strings.ContainsFunc(s, func(r rune) bool {
		return !unicode.IsPrint(r)
	}) {
		return strconv.Quote(s)
	}
	return s
}
