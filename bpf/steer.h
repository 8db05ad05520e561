/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * Vigil's interconnect link selection: the TCX egress program on every private
 * link that puts packets for a peer's cluster address onto a live link.
 *
 * Every node has one cluster address; vigild routes each peer's address out
 * through a private link (any one: the program moves the packet), with a
 * permanent neighbour entry holding a placeholder MAC so that the kernel never
 * ARPs for it. For a packet whose IPv4 destination is in st_dests, the program
 *
 *   1. finds the peer's live links: slot state HB_LINK_UP (written by the
 *      heartbeat sweep, in the heartbeat object's `slots` map, shared), a
 *      learned peer MAC, a configured interface, and not taken out of service
 *      by the error-rate rule (st_bad[link] != 0). If every up link is bad,
 *      the bad ones are used rather than none (ST_C_BAD_FALLBACK). If no link
 *      is up, the packet goes blind on the link the peer was heard on last
 *      (ST_C_BLIND), with the MAC learned there: a dead link drops it as
 *      dropping would, but when the heartbeats only stalled (a starved CPU
 *      can delay them past the detection time) the traffic still flows.
 *      Only a peer never heard on any link drops its packets (ST_C_NO_LINK).
 *   2. picks one: ST_POLICY_SPREAD hashes the flow (addresses, protocol,
 *      ports) over the live links (LLT's traffic distribution: a flow stays
 *      on its link while the set of live links stays the same);
 *      ST_POLICY_PRIMARY takes the live link with the lowest id (MEMORY
 *      CHANNEL's primary and secondary).
 *   3. writes the Ethernet header: destination the MAC the heartbeat plane
 *      learned for (peer, link), source the link's own MAC; counts the packet
 *      for (peer, link) in st_stats; and passes it when the link is the one it
 *      is leaving on, or bpf_redirect()s it to the link's egress.
 *
 * A redirected packet runs the program again on the target link. It then
 * normally picks the same link and passes. Should the link state change in
 * between, a packet that already carries this link's own MAC and the peer's
 * learned MAC on this link, on an up link, is passed as it is (no ping-pong).
 *
 * Other traffic is not touched: the program returns TCX_NEXT.
 */
#ifndef VIGIL_BPF_STEER_H
#define VIGIL_BPF_STEER_H

#include <linux/types.h>

#include "heartbeat.h"

enum st_policy {
	ST_POLICY_SPREAD = 0,	/* per-flow hashing across live links (LLT) */
	ST_POLICY_PRIMARY = 1,	/* lowest-numbered live link (MEMORY CHANNEL) */
};

/* Why a packet was counted (a per-CPU array of __u64 indexed by this). */
enum st_counter {
	ST_C_STEERED = 0,	/* cluster packets passed on the link they left on */
	ST_C_REDIRECTED,	/* cluster packets redirected to another link */
	ST_C_NO_LINK,		/* dropped: no MAC learned for the peer on any link */
	ST_C_BAD_FALLBACK,	/* sent on a bad link: every up link is bad */
	ST_C_ALREADY,		/* second pass after a redirect that raced a change */
	ST_C_BLIND,		/* no link up: sent on the link heard last */
	ST_C_MAX,
};

/* One private link of this node. */
struct st_link {
	__u32 ifindex;		/* 0: not configured */
	__u8 mac[6];		/* the interface's own MAC */
	__u8 pad[2];
};

/* Configuration, one entry of an array map, written by user space. */
struct st_config {
	__u32 policy;		/* enum st_policy */
	__u32 nlinks;
	struct st_link links[HB_MAX_LINKS];
};

/* Traffic of one (peer, link), per CPU, index peer * HB_MAX_LINKS + link. */
struct st_stats {
	__u64 packets;
	__u64 bytes;
};

#endif /* VIGIL_BPF_STEER_H */
