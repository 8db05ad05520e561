//go:build ignore
// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
/*
 * Interconnect link selection in the kernel (see steer.h for the rules).
 *
 *   steer_egress  TCX egress on every private link: steers packets for a
 *                 peer's cluster address onto a live link
 *
 * The `slots` map is the heartbeat object's (bpf/heartbeat.c): the loader
 * replaces this declaration with that map, so the link state the bpf_timer
 * sweep writes is what this program reads, without user space in between.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "steer.h"

/* TCX verdicts (linux/bpf.h names them TCX_*; the values are TC_ACT_*'s). */
#define ST_NEXT		-1
#define ST_PASS		0
#define ST_DROP		2

/* heartbeat.c's slot map, given to this program at load time. */
HB_SLOTS_MAP;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct st_config);
} steer_config SEC(".maps");

/* A peer's cluster address (network byte order) -> its node id. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HB_MAX_NODES);
	__type(key, __u32);
	__type(value, __u32);
} steer_dests SEC(".maps");

/* Per link: non-zero while the error-rate rule keeps it out of service. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, HB_MAX_LINKS);
	__type(key, __u32);
	__type(value, __u32);
} steer_bad SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HB_MAX_NODES * HB_MAX_LINKS);
	__type(key, __u32);
	__type(value, struct st_stats);
} steer_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ST_C_MAX);
	__type(key, __u32);
	__type(value, __u64);
} steer_counters SEC(".maps");

/* Make the types reachable from BTF for bpf2go -type. */
const enum st_policy *unused_st_policy __attribute__((unused));
const enum st_counter *unused_st_counter __attribute__((unused));

static __always_inline void count(__u32 c)
{
	__u64 *v = bpf_map_lookup_elem(&steer_counters, &c);

	if (v)
		*v += 1;
}

static __always_inline int mac_zero(const __u8 *m)
{
	return !(m[0] | m[1] | m[2] | m[3] | m[4] | m[5]);
}

static __always_inline int mac_eq(const __u8 *a, const __u8 *b)
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] &&
	       a[3] == b[3] && a[4] == b[4] && a[5] == b[5];
}

/* A flow hash of the addresses, the protocol and, for TCP and UDP, the ports:
 * stable for the flow's life, unlike skb->hash, which TCP changes after a
 * timeout. */
static __always_inline __u32 flow_hash(__u32 saddr, __u32 daddr, __u32 proto, __u32 ports)
{
	__u64 h = 0x9e3779b97f4a7c15ULL;

	h ^= saddr;
	h *= 0xff51afd7ed558ccdULL;
	h ^= daddr;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= ((__u64)proto << 32) | ports;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	return (__u32)(h ^ (h >> 29));
}

/* The links of one peer, as check_link finds them. */
struct links_view {
	__u32 up;	/* bit per link: up with a learned MAC */
	__u32 live;	/* ... and not bad */
	__u32 cur;	/* the link the packet is leaving on, or HB_MAX_LINKS */
	__u32 recent;	/* the link with a learned MAC heard last, or HB_MAX_LINKS */
	__u64 recent_ns;
};

static __always_inline void check_link(const struct st_config *cfg, const struct __sk_buff *skb,
				       __u32 peer, __u32 l, struct links_view *lv)
{
	struct hb_slot *s;
	__u32 idx, *bad;
	__u64 seen;

	if (l >= cfg->nlinks || !cfg->links[l].ifindex)
		return;
	if (cfg->links[l].ifindex == skb->ifindex)
		lv->cur = l;
	idx = peer * HB_MAX_LINKS + l;
	s = bpf_map_lookup_elem(&slots, &idx);
	if (!s || mac_zero(s->peer_mac))
		return;
	seen = s->last_data_ns > s->last_echo_ns ? s->last_data_ns : s->last_echo_ns;
	if (lv->recent == HB_MAX_LINKS || seen > lv->recent_ns) {
		lv->recent = l;
		lv->recent_ns = seen;
	}
	if (s->state != HB_LINK_UP)
		return;
	lv->up |= 1u << l;
	bad = bpf_map_lookup_elem(&steer_bad, &l);
	if (!bad || !*bad)
		lv->live |= 1u << l;
}

SEC("tcx/egress")
int steer_egress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	const struct st_config *cfg;
	const struct st_link *lk;
	struct hb_slot *s;
	struct st_stats *st;
	__u32 zero = 0, *peerp, peer, ports = 0, up = 0, live = 0, n = 0, pick, chosen = HB_MAX_LINKS;
	__u32 cur = HB_MAX_LINKS, idx, l;
	struct links_view lv = { .cur = HB_MAX_LINKS, .recent = HB_MAX_LINKS };

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return ST_NEXT;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return ST_NEXT;
	peerp = bpf_map_lookup_elem(&steer_dests, &ip->daddr);
	if (!peerp)
		return ST_NEXT;
	peer = *peerp;
	cfg = bpf_map_lookup_elem(&steer_config, &zero);
	if (!cfg || peer == 0 || peer >= HB_MAX_NODES)
		return ST_NEXT;

	/* One call per link id: constant offsets for the verifier. */
	check_link(cfg, skb, peer, 0, &lv);
	check_link(cfg, skb, peer, 1, &lv);
	check_link(cfg, skb, peer, 2, &lv);
	check_link(cfg, skb, peer, 3, &lv);
	up = lv.up;
	live = lv.live;
	cur = lv.cur;
	if (!live && up) {
		live = up;
		count(ST_C_BAD_FALLBACK);
	}
	if (!live) {
		if (lv.recent >= HB_MAX_LINKS) {
			count(ST_C_NO_LINK);
			return ST_DROP;
		}
		count(ST_C_BLIND);
		chosen = lv.recent;
		goto send;
	}

	/* Second pass after a redirect: already addressed for this up link. */
	if (cur < HB_MAX_LINKS && (up & (1u << cur))) {
		cur &= HB_MAX_LINKS - 1;	/* a bound the verifier sees */
		idx = peer * HB_MAX_LINKS + cur;
		s = bpf_map_lookup_elem(&slots, &idx);
		if (s && mac_eq(eth->h_source, cfg->links[cur].mac) && mac_eq(eth->h_dest, s->peer_mac)) {
			chosen = cur;
			if (!(live & (1u << cur)))
				count(ST_C_ALREADY);
			goto send;
		}
	}

	for (l = 0; l < HB_MAX_LINKS; l++)
		n += (live >> l) & 1;
	if (cfg->policy == ST_POLICY_PRIMARY) {
		pick = 0;
	} else {
		if (ip->protocol == IPPROTO_TCP || ip->protocol == IPPROTO_UDP) {
			/* Both start with the two ports. */
			__u32 off = ip->ihl * 4;
			__u16 *p;

			if (off < sizeof(*ip) || off > 60)
				return ST_NEXT;
			p = (void *)ip + off;
			if ((void *)(p + 2) <= data_end)
				ports = ((__u32)p[0] << 16) | p[1];
		}
		pick = flow_hash(ip->saddr, ip->daddr, ip->protocol, ports) % n;
	}
	for (l = 0; l < HB_MAX_LINKS; l++) {
		if (!(live & (1u << l)))
			continue;
		if (pick == 0) {
			chosen = l;
			break;
		}
		pick--;
	}
	if (chosen >= HB_MAX_LINKS)
		return ST_DROP;	/* cannot happen: n counts live */

send:
	if (chosen >= HB_MAX_LINKS)
		return ST_DROP;
	chosen &= HB_MAX_LINKS - 1;
	idx = peer * HB_MAX_LINKS + chosen;
	s = bpf_map_lookup_elem(&slots, &idx);
	if (!s)
		return ST_DROP;
	__builtin_memcpy(eth->h_dest, s->peer_mac, 6);
	lk = &cfg->links[chosen];
	__builtin_memcpy(eth->h_source, lk->mac, 6);
	st = bpf_map_lookup_elem(&steer_stats, &idx);
	if (st) {
		st->packets++;
		st->bytes += skb->len;
	}
	if (chosen == cur) {
		count(ST_C_STEERED);
		return ST_PASS;
	}
	count(ST_C_REDIRECTED);
	return bpf_redirect(lk->ifindex, 0);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
