// Package netns builds Vigil test clusters on one machine: one network namespace per node, two
// private links and one public link per node, a client namespace, shared files standing in for
// shared disks, and reversible fault injection (link down, partition, packet loss, process
// stop/continue/kill, CPU saturation).
//
// # Topology
//
// Every cluster gets a hub namespace that holds three bridges, one per network: "priv0" and
// "priv1" (the private interconnect) and "pub" (the public network). Each node namespace has one
// veth end on each bridge, named like the bridge it joins; the client namespace has one on "pub".
// All addresses come from 198.18.0.0/15:
//
//	private link k (0, 1)   198.18.{k+1}.{node}/24
//	public link             198.19.0.{node}/24
//	client                  198.19.0.250/24
//
// Node ids run from 1 to [MaxNodes]. MAC addresses are fixed (see [MAC]) and the private links get
// permanent neighbour entries for every peer, so no ARP is needed there. IPv6 is disabled in every
// namespace so that the links carry only what tests send.
//
// Namespace names start with [Prefix], the owning process id and a per-process counter, so
// clusters of parallel tests and of parallel test binaries never collide. [Sweep] removes what a
// killed run left behind: namespaces with the prefix whose owning process is gone, and the
// processes still inside them.
//
// # Ordering
//
// [Build] creates everything or nothing: on error it removes what it made. [Cluster.Close] ends
// every process the cluster started (by PID), then deletes the namespaces (which removes their
// links, bridges and nftables rules) and the shared directory. [New] registers Close with
// t.Cleanup, which also runs after a failure or panic. Root is required; [RequireRoot] skips a
// test with the reason when it is missing.
package netns
