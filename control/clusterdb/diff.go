package clusterdb

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// ChangeKind says what happened to a field or element of the configuration.
type ChangeKind string

// The change kinds.
const (
	Added   ChangeKind = "added"
	Removed ChangeKind = "removed"
	Changed ChangeKind = "changed"
)

// Change is one difference between two configurations.
type Change struct {
	Kind ChangeKind `json:"kind"`
	// Path names the field or element by the keys of cluster.yaml:
	// groups.web.resources.ip.params.address, nodes.gamma, heartbeat.interval.
	Path string `json:"path"`
	// Old and New are the values of a field as text; empty for a whole element that was
	// added or removed (nodes.gamma), and on the side where the field does not exist.
	Old string `json:"old,omitempty"`
	New string `json:"new,omitempty"`
}

// String writes the change for people:
//
//	added groups.db
//	removed nodes.gamma
//	added groups.web.resources.ip.params.prefix: 24
//	changed groups.web.nodes: [alpha, beta] -> [beta, alpha]
func (c Change) String() string {
	switch {
	case c.Kind == Changed:
		return fmt.Sprintf("changed %s: %s -> %s", c.Path, c.Old, c.New)
	case c.Kind == Added && c.New != "":
		return fmt.Sprintf("added %s: %s", c.Path, c.New)
	case c.Kind == Removed && c.Old != "":
		return fmt.Sprintf("removed %s: %s", c.Path, c.Old)
	}
	return fmt.Sprintf("%s %s", c.Kind, c.Path)
}

// Diff returns the changes that turn old into new, section by section in the order of the file
// format; within a collection, elements in the order of new, then the removed ones in the
// order of old. The order of a mapping's keys is not a change; the order of a list (a group's
// node preference) is. A nil Config is an empty one, so Diff(nil, c) lists everything in c as
// added.
func Diff(old, new *Config) []Change {
	if old == nil {
		old = &Config{}
	}
	if new == nil {
		new = &Config{}
	}
	var d differ
	d.leaf("version", strconv.Itoa(old.Version), strconv.Itoa(new.Version), old.Version != 0, new.Version != 0)
	oh, nh := old.Heartbeat, new.Heartbeat
	ho, hn := oh != (Heartbeat{}), nh != (Heartbeat{})
	d.leaf("heartbeat.interval", oh.Interval.String(), nh.Interval.String(), ho, hn)
	d.leaf("heartbeat.multiplier", strconv.Itoa(oh.Multiplier), strconv.Itoa(nh.Multiplier), ho, hn)
	d.leaf("heartbeat.stall_timeout", oh.StallTimeout.String(), nh.StallTimeout.String(), ho, hn)

	diffNamed(&d, "nodes", old.Nodes, new.Nodes, func(n Node) string { return n.Name },
		func(path string, o, n Node) {
			d.leaf(path+".id", strconv.Itoa(o.ID), strconv.Itoa(n.ID), true, true)
			d.leaf(path+".role", string(o.Role), string(n.Role), true, true)
		})
	diffNamed(&d, "resource_types", old.ResourceTypes, new.ResourceTypes, func(t ResourceType) string { return t.Name },
		func(path string, o, n ResourceType) {
			d.leaf(path+".agent", o.Agent, n.Agent, true, true)
			d.leaf(path+".category", string(o.Category), string(n.Category), true, true)
			diffNamed(&d, path+".parameters", o.Parameters, n.Parameters, func(p Parameter) string { return p.Name },
				func(path string, o, n Parameter) {
					d.leaf(path+".type", string(o.Type), string(n.Type), true, true)
					d.leaf(path+".required", strconv.FormatBool(o.Required), strconv.FormatBool(n.Required), true, true)
					d.leaf(path+".default", show(o.Default), show(n.Default), o.Default != "", n.Default != "")
				})
		})
	diffNamed(&d, "groups", old.Groups, new.Groups, func(g Group) string { return g.Name },
		func(path string, o, n Group) {
			d.leaf(path+".kind", string(o.Kind), string(n.Kind), true, true)
			d.leaf(path+".nodes", showList(o.Nodes), showList(n.Nodes), true, true)
			d.leaf(path+".autostart", strconv.FormatBool(o.AutoStart), strconv.FormatBool(n.AutoStart), true, true)
			diffNamed(&d, path+".resources", o.Resources, n.Resources, func(r Resource) string { return r.Name },
				func(path string, o, n Resource) {
					d.leaf(path+".type", o.Type, n.Type, true, true)
					keys := sortedKeys(n.Params)
					for _, k := range sortedKeys(o.Params) {
						if _, ok := n.Params[k]; !ok {
							keys = append(keys, k)
						}
					}
					for _, k := range keys {
						ov, oin := o.Params[k]
						nv, nin := n.Params[k]
						d.leaf(path+".params."+k, show(ov), show(nv), oin, nin)
					}
					d.leaf(path+".requires", showList(o.Requires), showList(n.Requires),
						len(o.Requires) > 0, len(n.Requires) > 0)
				})
		})
	diffNamed(&d, "drd_devices", old.DRDDevices, new.DRDDevices, func(x DRDDevice) string { return x.Name },
		func(path string, o, n DRDDevice) {
			d.leaf(path+".backing", show(o.Backing), show(n.Backing), true, true)
			d.leaf(path+".nodes", showList(o.Nodes), showList(n.Nodes), true, true)
			d.leaf(path+".size", strconv.FormatUint(o.Size, 10), strconv.FormatUint(n.Size, 10), o.Size != 0, n.Size != 0)
		})
	diffNamed(&d, "users", old.Users, new.Users, func(u User) string { return u.Name },
		func(path string, o, n User) {
			d.leaf(path+".role", string(o.Role), string(n.Role), true, true)
		})
	return d.changes
}

type differ struct{ changes []Change }

// leaf compares a field present in old (oin) and new (nin) with the values o and n.
func (d *differ) leaf(path, o, n string, oin, nin bool) {
	switch {
	case oin && nin && o != n:
		d.changes = append(d.changes, Change{Kind: Changed, Path: path, Old: o, New: n})
	case oin && !nin:
		d.changes = append(d.changes, Change{Kind: Removed, Path: path, Old: o})
	case !oin && nin:
		d.changes = append(d.changes, Change{Kind: Added, Path: path, New: n})
	}
}

// diffNamed compares two collections of named elements.
func diffNamed[T any](d *differ, path string, old, new []T, name func(T) string, same func(path string, o, n T)) {
	find := func(list []T, key string) (T, bool) {
		for _, x := range list {
			if name(x) == key {
				return x, true
			}
		}
		var zero T
		return zero, false
	}
	for _, n := range new {
		p := path + "." + name(n)
		if o, ok := find(old, name(n)); ok {
			same(p, o, n)
		} else {
			d.changes = append(d.changes, Change{Kind: Added, Path: p})
		}
	}
	for _, o := range old {
		if !slices.ContainsFunc(new, func(n T) bool { return name(n) == name(o) }) {
			d.changes = append(d.changes, Change{Kind: Removed, Path: path + "." + name(o)})
		}
	}
}

func show(s string) string { return quoteIfNeeded(s) }

func showList(list []string) string {
	out := make([]string, len(list))
	for i, s := range list {
		out[i] = show(s)
	}
	return "[" + strings.Join(out, ", ") + "]"
}
