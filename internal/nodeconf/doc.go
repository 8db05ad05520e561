// Package nodeconf reads, validates and writes the node configuration file of vigild (usually
// /etc/vigil/node.yaml) and the cluster key file it names.
//
// The configuration says what this node needs before it can join the cluster: the cluster's
// name and id, this node's id, the key that authenticates heartbeats, where the daemon keeps its
// data, the heartbeat timing, the private links and the other nodes. Everything else (service
// groups, resources, users) lives in the replicated cluster database, not here.
//
// # Format
//
// A complete file, with every optional key shown at its default where it has one:
//
//	cluster: prod-a                    # cluster name: 1..63 characters from a-z, 0-9 and "-"
//	cluster_id: 4711                   # optional, 1..4294967295; default DefaultClusterID(cluster)
//	node: 1                            # this node's id, 1..63
//	name: alpha                        # optional node name (same rule as cluster); default "node<id>"
//	key_file: /etc/vigil/cluster.key   # the 128-bit cluster key, see LoadKey
//	data_dir: /var/lib/vigil           # the daemon's data directory (the daemon creates it)
//	admin_socket: /run/vigil/vigild.sock  # optional; the admin API's unix socket
//	heartbeat:                         # optional, as are all its keys
//	  interval: 10ms                   # one frame per link and interval; 100us..10s
//	  multiplier: 3                    # a link is down after interval*multiplier silence; 2..100
//	  rise: 3                          # frames in a row that bring a link up; 1..100
//	  stall_timeout: 5s                # a peer whose kernel echoes but whose daemon is silent is
//	                                   # "stalled" for this long before it counts as down;
//	                                   # must exceed interval*multiplier
//	  progress_timeout: 0s             # how long a peer's progress counter may stand still;
//	                                   # 0 = off, otherwise must exceed interval*multiplier
//	  sweep: 10ms                      # kernel sweep period; 20us..interval; default interval
//	  mode: ebpf                       # ebpf: receive in XDP; fallback: AF_PACKET in user space
//	links:                             # 1..4 private links; the position is the link id (0..3)
//	  - name: priv0                    # a local interface: raw Ethernet, ethertype 0x88B5
//	  - name: wan0                     # this one carries heartbeats in UDP, for a routed link:
//	    udp: {local: 198.18.1.1:5405}  #   the local endpoint (unicast ip:port)
//	peers:                             # the other nodes, 0..62 of them
//	  - id: 2
//	    name: beta                     # optional; default "node<id>"
//	    udp: {wan0: 198.18.1.2:5405}   # the peer's endpoint on every UDP link, by link name
//	  - id: 3                          # named node3
//	    udp: {wan0: 198.18.1.3:5405}
//	interconnect:                      # optional: cluster addresses and eBPF link selection
//	  network: 198.18.100.0/24         # node N's cluster address is this network's + N (IPv4, /26 or wider)
//	  policy: spread                   # spread: each flow hashed onto a live link (LLT);
//	                                   # primary: the live link with the lowest id (MEMORY CHANNEL)
//	  error_threshold: 10              # more than this many errors on a link within error_window
//	  error_window: 1m                 #   take it out of service while its heartbeats still pass;
//	  error_clean: 5m                  #   it returns after error_clean without errors
//	disk_heartbeat:                    # optional: liveness through a shared disk
//	  path: /dev/disk/by-id/wwn-0x5000c500a1b2c3d4  # shared block device or file, O_DIRECT
//	  interval: 100ms                  # one write of this node's slot (and a read of each peer's); 1ms..10s
//	  timeout: 1s                      # a peer's slot standing still this long: its disk heartbeat stopped
//
// The interconnect and disk_heartbeat keys are optional as a whole; when present, network
// and path are required. Every node of a cluster must give the same network and policy.
//
// Durations are Go durations (time.ParseDuration): 250us, 1.5ms, 10s. A plain 0 is accepted
// for zero. The cluster, node, key_file, data_dir and links keys are required.
//
// UDP endpoints of peers are given per link, keyed by the link's name, because a list indexed
// like links would silently shift when a link is added or removed. A peer needs an endpoint on
// every UDP link, of the same address family as the link's local endpoint, and on no raw link;
// raw Ethernet links reach every node on their segment without addresses.
//
// Decoding is strict. Unknown and duplicate keys, values of the wrong type, numbers and
// durations out of range, invalid interface names (the kernel's dev_valid_name rule), endpoints
// that are not ip:port, duplicate node ids, node names, link names and endpoints are all errors.
// Each error names the file, the line and the key, for example
//
//	node.yaml:7: unknown key "intervall" in heartbeat
//	node.yaml:12: peers[1].id: 0 is not a valid node id (1..63)
//
// and all errors found are returned together (errors.Join), in line order. A file with any error
// yields no Config at all. YAML anchors and aliases are followed; merge keys (<<) are not
// supported. The file holds exactly one YAML document.
//
// Load resolves relative key_file, data_dir and admin_socket paths against the directory of the
// configuration file; Parse, which never touches the file system, leaves them as written.
//
// # Cluster id
//
// Heartbeat frames carry a 32-bit cluster id so that two clusters sharing a segment ignore each
// other. Without cluster_id it is DefaultClusterID(cluster): the 32-bit FNV-1a hash (hash/fnv
// New32a) of the cluster name's bytes, or 1 should that hash be 0. For example "prod-a" gives
// 0xe9b93d0e (3921231118). Zero is reserved so that the zero Config field means "default".
//
// # Writing configurations
//
// Config.Marshal writes a Config back as YAML that Parse accepts. Zero optional fields are left
// out and so take their defaults when parsed again, which lets tests and benchmarks build a
// Config in Go with only the fields they care about. For a Config returned by Parse or Load,
// Parse(Marshal()) gives an equal Config.
//
// # Key file
//
// The cluster key file holds the 128-bit key as 32 hex digits, optionally surrounded by
// whitespace (a trailing newline is usual). It must not be readable or writable by group or
// others (chmod 600) and the key must not be all zero. GenerateKey writes a new random key file.
package nodeconf
