package clusterdb

import (
	"bytes"
	"fmt"
	"strconv"

	"go.yaml.in/yaml/v3"
)

// Marshal writes c as YAML that ParseConfig reads back into an equal Config: collections in
// their order, parameters in the order their type declares them, and fields at their default
// (role member, kind failover, autostart true, category on-off, parameter type string) left
// out. It fails if c is not valid.
func (c *Config) Marshal() ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("marshal cluster config: %w", err)
	}
	root := &yaml.Node{Kind: yaml.MappingNode}
	set(root, "version", intNode(int64(c.Version)))

	hb := &yaml.Node{Kind: yaml.MappingNode}
	set(hb, "interval", strNode(c.Heartbeat.Interval.String()))
	set(hb, "multiplier", intNode(int64(c.Heartbeat.Multiplier)))
	set(hb, "stall_timeout", strNode(c.Heartbeat.StallTimeout.String()))
	set(root, "heartbeat", hb)

	nodes := &yaml.Node{Kind: yaml.MappingNode}
	for _, n := range c.Nodes {
		m := flowMap()
		set(m, "id", intNode(int64(n.ID)))
		if n.Role != RoleMember {
			set(m, "role", strNode(string(n.Role)))
		}
		set(nodes, n.Name, m)
	}
	set(root, "nodes", nodes)

	if len(c.ResourceTypes) > 0 {
		types := &yaml.Node{Kind: yaml.MappingNode}
		for _, t := range c.ResourceTypes {
			m := &yaml.Node{Kind: yaml.MappingNode}
			set(m, "agent", strNode(t.Agent))
			if t.Category != CategoryOnOff {
				set(m, "category", strNode(string(t.Category)))
			}
			if len(t.Parameters) > 0 {
				params := &yaml.Node{Kind: yaml.MappingNode}
				for _, p := range t.Parameters {
					pm := flowMap()
					if p.Type != ParamString {
						set(pm, "type", strNode(string(p.Type)))
					}
					if p.Required {
						set(pm, "required", boolNode(true))
					}
					if p.Default != "" {
						set(pm, "default", valueNode(p.Type, p.Default))
					}
					set(params, p.Name, pm)
				}
				set(m, "parameters", params)
			}
			set(types, t.Name, m)
		}
		set(root, "resource_types", types)
	}

	if len(c.Groups) > 0 {
		groups := &yaml.Node{Kind: yaml.MappingNode}
		for _, g := range c.Groups {
			m := &yaml.Node{Kind: yaml.MappingNode}
			if g.Kind != GroupFailover {
				set(m, "kind", strNode(string(g.Kind)))
			}
			set(m, "nodes", strList(g.Nodes))
			if !g.AutoStart {
				set(m, "autostart", boolNode(false))
			}
			if len(g.Resources) > 0 {
				res := &yaml.Node{Kind: yaml.MappingNode}
				for _, r := range g.Resources {
					rm := &yaml.Node{Kind: yaml.MappingNode}
					set(rm, "type", strNode(r.Type))
					if len(r.Params) > 0 {
						// Validate has checked that every value belongs to a parameter of the type.
						t, _ := c.ResourceType(r.Type)
						pm := flowMap()
						for _, p := range t.Parameters {
							if v, ok := r.Params[p.Name]; ok {
								set(pm, p.Name, valueNode(p.Type, v))
							}
						}
						set(rm, "params", pm)
					}
					if len(r.Requires) > 0 {
						set(rm, "requires", strList(r.Requires))
					}
					set(res, r.Name, rm)
				}
				set(m, "resources", res)
			}
			set(groups, g.Name, m)
		}
		set(root, "groups", groups)
	}

	if len(c.DRDDevices) > 0 {
		devs := &yaml.Node{Kind: yaml.MappingNode}
		for _, d := range c.DRDDevices {
			m := &yaml.Node{Kind: yaml.MappingNode}
			set(m, "backing", strNode(d.Backing))
			set(m, "nodes", strList(d.Nodes))
			if d.Size != 0 {
				set(m, "size", &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.FormatUint(d.Size, 10)})
			}
			set(devs, d.Name, m)
		}
		set(root, "drd_devices", devs)
	}

	if len(c.Users) > 0 {
		users := &yaml.Node{Kind: yaml.MappingNode}
		for _, u := range c.Users {
			m := flowMap()
			set(m, "role", strNode(string(u.Role)))
			set(users, u.Name, m)
		}
		set(root, "users", users)
	}

	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return nil, fmt.Errorf("marshal cluster config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("marshal cluster config: %w", err)
	}
	return buf.Bytes(), nil
}

func set(m *yaml.Node, key string, v *yaml.Node) {
	m.Content = append(m.Content, strNode(key), v)
}

func flowMap() *yaml.Node { return &yaml.Node{Kind: yaml.MappingNode, Style: yaml.FlowStyle} }

// strNode is a string scalar; the encoder quotes it where it would otherwise read as another
// type.
func strNode(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s} }

func intNode(v int64) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.FormatInt(v, 10)}
}

func boolNode(v bool) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(v)}
}

// valueNode writes a parameter value of type t, in canonical form.
func valueNode(t ParamType, v string) *yaml.Node {
	switch t {
	case ParamInteger:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: v}
	case ParamBoolean:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: v}
	}
	return strNode(v)
}

func strList(list []string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
	for _, s := range list {
		n.Content = append(n.Content, strNode(s))
	}
	return n
}
