// Package clusterdb is the cluster database of Vigil: the state machine that raft replicates to
// every node (configuration, membership, runtime state, event log), and the declarative cluster
// configuration that administrators write as cluster.yaml. It is the successor of the VCS HAD
// configuration (main.cf, types.cf) and the Sun Cluster CCD.
//
// The package is pure: no goroutines, no I/O, no clock. Raft and its driver live elsewhere;
// they hand committed entries to State.Apply and ask State.Snapshot for snapshots.
//
// # Cluster configuration
//
// A complete cluster.yaml, with the defaults of optional keys noted:
//
//	version: 1                        # schema version of this file; required
//	heartbeat:                        # optional; the cluster's intended profile (each node's
//	  interval: 10ms                  #   node.yaml decides its own timing); 100us..10s
//	  multiplier: 3                   #   2..100
//	  stall_timeout: 5s               #   must exceed interval*multiplier; at most 1h
//	nodes:                            # required; by name (the name in the node's node.yaml)
//	  alpha: {id: 1}                  # id 1..63; role member (the default) hosts services
//	  beta:  {id: 2}
//	  gamma: {id: 3, role: witness}   # votes and stores the log, hosts nothing
//	resource_types:                   # like VCS types.cf
//	  ip:
//	    agent: builtin:ip             # builtin:ip|process|mount, ocf:PROVIDER:NAME, script:/path
//	    parameters:                   # type string (default), integer, boolean or duration;
//	      address: {required: true}   #   required: false (default); default: a value of
//	      device: {required: true}    #   the type, only for optional parameters
//	      prefix: {type: integer, default: 24}
//	  nic:
//	    agent: builtin:ip
//	    category: persistent          # on-off (default), on-only or persistent (VCS categories)
//	    parameters:
//	      device: {required: true}
//	  httpd:
//	    agent: ocf:heartbeat:apache
//	    parameters:
//	      configfile: {default: /etc/httpd/httpd.conf}
//	      stop_timeout: {type: duration, default: 30s}
//	groups:                           # service groups
//	  web:
//	    kind: failover                # failover (default): one node at a time; or parallel
//	    nodes: [alpha, beta]          # required; preference order; no witnesses
//	    autostart: true               # default true: start when the cluster forms
//	    resources:
//	      nic0: {type: nic, params: {device: eth0}}
//	      ip:
//	        type: ip
//	        params: {address: 192.0.2.10, device: eth0}
//	        requires: [nic0]          # resources of this group that must be online first
//	      server:
//	        type: httpd
//	        requires: [ip]
//	drd_devices:                      # distributed raw disks
//	  data0:
//	    backing: /dev/vg0/data0       # absolute path on the serving node
//	    nodes: [alpha, beta]          # nodes that can serve it; no witnesses
//	    size: 1073741824              # optional; bytes, a multiple of 4096 (default: the backing's)
//	users:                            # the VCS privilege model
//	  root: {role: admin}             # admin: everything
//	  ops: {role: operator}           # operator: run groups, not change the configuration
//	  audit: {role: guest}            # guest (the default): read only
//
// Names of nodes follow node.yaml (1..63 of a-z, 0-9, -); other names may also hold _ and
// start with a letter or digit. Parameter names are A-Z, a-z, 0-9 and _ (OCF_RESKEY_ suffixes).
// Parameter values are kept as text in canonical form: 0x10 becomes 16, 90s becomes 1m30s.
//
// ParseConfig decodes strictly: unknown keys (with a suggestion for typos), duplicate keys,
// wrong types, values out of range, unknown nodes, types and resources, witnesses where
// services run, parameters a type does not have, missing required parameters and dependency
// cycles are errors naming the file, the line and the field, all reported together:
//
//	cluster.yaml:14: groups.web.resources.ip.requires: unknown resource "nic1"
//	cluster.yaml:20: groups.web.resources.a.requires: dependency cycle a -> b -> a
//
// Config.Validate applies the same rules to a Config built in Go, naming fields by path only.
// Config.Marshal writes a Config back (ParseConfig(Marshal(c)) equals c), and Diff lists the
// changes between two configurations for `vigil config diff` and the event log.
//
// # The state machine and its contract with the driver
//
// State holds the configuration (nil until the first ApplyConfig: the nodes are then in VCS's
// admin-wait, see State.HasValidConfig), the membership records with VCS-style node states, the
// runtime sections later issues fill (group and resource states per node, faults, freezes) and
// the event log, a ring of the last MaxEvents events.
//
// Commands are proposed as the Data of raft entries, written by Encode: one JSON object,
//
//	{"v":1,"type":"node-join","at":1767225600000000000,"who":"vigild@alpha","payload":{"id":2,"name":"beta","role":"member"}}
//
// with the encoding version "v", the command type, the proposer's time in Unix nanoseconds,
// the proposer and the typed payload. Equal commands encode to equal bytes, and decoding is
// strict (unknown fields and trailing data are malformed). The driver must, for each committed
// entry in log order:
//
//  1. call State.Apply(entry.Index, entry.Data) for normal entries (skipping empty entries and
//     raft configuration changes is fine: indexes may have gaps);
//  2. report Result.Err to the proposer when Status is StatusRejected (ErrConflict for a lost
//     compare-and-swap); the entry is consumed and the state unchanged;
//  3. stop applying when Status is StatusNeedsUpgrade: the entry was written by a newer build
//     (a higher command, configuration or snapshot schema version). Nothing was applied,
//     AppliedIndex stays before the entry, and Apply refuses the entry and all later ones. The
//     node must say "this node must be upgraded to apply entry N" (Result.Err) everywhere, stop
//     taking part in decisions, and be upgraded; the new build applies the entry from the log.
//     Skipping the entry instead would let this node diverge from the upgraded ones.
//
// Replaying entries at or below AppliedIndex (after a restart from a snapshot) is skipped, so
// the driver may replay from any point. The same entries in the same order give the same State,
// and the same Snapshot bytes, on every node.
//
// Rolling upgrades: a new build must keep reading every older command version and migrating
// every older snapshot schema (see migrations in snapshot.go), and proposers must not write a
// newer version until every node runs a build that reads it (a later issue adds the cluster's
// version to the state for that).
//
// # DRD placements
//
// The devices of drd_devices are placed by two commands (drd.go): drd-place puts a device on
// one of its running nodes with the next epoch, as a compare-and-swap on the current epoch,
// naming the node that serves it now when that one must stop first (a relocation); drd-released
// records that the old node stopped, after which the new one may serve (DRDPlacement.Ready).
// Placements of devices or nodes the configuration no longer has are dropped with it. They
// came with command version 2 and schema version 2 (a version 1 snapshot has none).
//
// # Snapshots
//
// State.Snapshot writes the whole state as versioned JSON ({"schema_version":1,...}), with
// deterministic bytes; Restore reads it, migrates older schema versions step by step, refuses
// newer ones with ErrNeedsUpgrade, and checks the result as a whole.
//
// # Reads
//
// State.View returns a copy of the state for the admin API with a Stale mark: the driver sets it
// when the node is not in a quorate partition or is behind the leader, and Reason says why.
// Stale views are shown, marked, but nothing is decided on them.
package clusterdb
