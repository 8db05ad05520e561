//go:build ignore
// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
/*
 * The heartbeat plane in the kernel (see heartbeat.h for the protocol).
 *
 *   hb_xdp        per private link: checks and records heartbeat frames,
 *                 reflects echo requests with XDP_TX, passes other traffic
 *   hb_sweep_cb   bpf_timer callback: turns stale slots into transitions
 *   hb_start      run once by user space (BPF_PROG_TEST_RUN) to arm the timer
 *   hb_sweep      run by user space to sweep at once (tests, and after a
 *                 netlink carrier-loss confirmation)
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "heartbeat.h"

#define CLOCK_MONOTONIC 1
/* User space writes some maps through mmap while the programs run: read each
 * such field once. */
#define READ_ONCE(x) (*(const volatile typeof(x) *)&(x))

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hb_config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);	/* ifindex */
	__type(value, struct hb_iface);
} ifaces SEC(".maps");

/* Readable by user space without syscalls (Map.Memory()). */
HB_SLOTS_MAP;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, HB_MAX_NODES);
	__type(key, __u32);
	__type(value, struct hb_peer);
} peers SEC(".maps");

/* Written by this node's sender, per link: when it sent and when it owes the
 * next send (struct hb_tx). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, HB_MAX_LINKS);
	__type(key, __u32);
	__type(value, struct hb_tx);
} txstamps SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HB_C_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* Frames with a wrong MAC per receiving link id: one input of the interconnect's
 * error-rate rule (user space reads it; the counters map has no link). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HB_MAX_LINKS);
	__type(key, __u32);
	__type(value, __u64);
} link_bad_mac SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

struct hb_timer {
	struct bpf_timer timer;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hb_timer);
} timers SEC(".maps");

/* Make the types reachable from BTF for bpf2go -type. */
const struct hb_frame *unused_hb_frame __attribute__((unused));
const struct hb_event *unused_hb_event __attribute__((unused));
const struct hb_tx *unused_hb_tx __attribute__((unused));
const enum hb_counter *unused_hb_counter __attribute__((unused));
const enum hb_peer_state *unused_hb_peer_state __attribute__((unused));
const enum hb_link_state *unused_hb_link_state __attribute__((unused));
const enum hb_event_kind *unused_hb_event_kind __attribute__((unused));
const enum hb_flags *unused_hb_flags __attribute__((unused));

static __always_inline void count(__u32 c)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &c);

	if (v)
		*v += 1;	/* per-CPU: no atomics needed */
}

static __always_inline __u64 clock_now(const struct hb_config *cfg)
{
	return cfg->now_ns ? cfg->now_ns : bpf_ktime_get_ns();
}

/* now - t, or 0 when t is in the future (a frame stamped on another CPU after
 * the sweep read its clock): such a t is fresh. */
static __always_inline __u64 age(__u64 now, __u64 t)
{
	return now > t ? now - t : 0;
}

static __always_inline __u64 max64(__u64 a, __u64 b)
{
	return a > b ? a : b;
}

/* SipHash-2-4 (Aumasson and Bernstein) of the first HB_MAC_OFF bytes of f. */
#define ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                        \
	do {                                                            \
		v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32); \
		v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;                  \
		v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;                  \
		v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32); \
	} while (0)

static __always_inline __u64 frame_mac(const struct hb_frame *f, __u64 k0, __u64 k1)
{
	const __u64 *w = (const __u64 *)f;
	__u64 v0 = k0 ^ 0x736f6d6570736575ULL;
	__u64 v1 = k1 ^ 0x646f72616e646f6dULL;
	__u64 v2 = k0 ^ 0x6c7967656e657261ULL;
	__u64 v3 = k1 ^ 0x7465646279746573ULL;
	__u64 m;
	int i;

	/* Seven full words; the frame is little-endian like the hash. */
#pragma unroll
	for (i = 0; i < HB_MAC_OFF / 8; i++) {
		m = w[i];
		v3 ^= m;
		SIPROUND;
		SIPROUND;
		v0 ^= m;
	}
	/* The final block holds no message bytes, only the length. */
	m = (__u64)HB_MAC_OFF << 56;
	v3 ^= m;
	SIPROUND;
	SIPROUND;
	v0 ^= m;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

static __always_inline int valid_peer(const struct hb_config *cfg, __u32 id)
{
	struct hb_peer *p;

	if (id == 0 || id >= HB_MAX_NODES || id == cfg->node_id)
		return 0;
	p = bpf_map_lookup_elem(&peers, &id);
	return p && p->configured;
}

static __always_inline struct hb_slot *slot_of(__u32 peer, __u32 link)
{
	__u32 idx = peer * HB_MAX_LINKS + link;

	return bpf_map_lookup_elem(&slots, &idx);
}

/* The sender's gap_ns on link now (0 without a sender). */
static __always_inline __u64 tx_gap(__u32 link)
{
	struct hb_tx *tx = bpf_map_lookup_elem(&txstamps, &link);

	return tx ? READ_ONCE(tx->gap_ns) : 0;
}

/* How long the echoes of slot s (on link) have been missing while this node's
 * sender was sending: now - last_echo_ns less the sender's quiet time since. */
static __always_inline __u64 echo_age(const struct hb_slot *s, __u32 link, __u64 now)
{
	struct hb_tx *tx = bpf_map_lookup_elem(&txstamps, &link);
	__u64 a = age(now, s->last_echo_ns), due, gap, quiet;

	if (!tx)
		return a;
	due = READ_ONCE(tx->due_ns);
	gap = READ_ONCE(tx->gap_ns);
	if (!due)
		return a;
	quiet = age(now, due);
	if (gap > s->echo_gap_ns)
		quiet += gap - s->echo_gap_ns;
	return a > quiet ? a - quiet : 0;
}

/* rise counts frames that came no more than detect apart. */
static __always_inline void bump_rise(struct hb_slot *s, const struct hb_config *cfg, __u64 now)
{
	__u64 seen = max64(s->last_data_ns, s->last_echo_ns);

	if (seen == 0 || age(now, seen) > cfg->detect_ns)
		s->rise = 1;
	else
		s->rise++;
}

/*
 * Check and record one frame. Returns the counter to bump; *reflect is set
 * when the frame is an echo request that must go back as a reply.
 */
static __always_inline __u32 record(struct hb_frame *fr, const struct hb_config *cfg,
				    const struct hb_iface *iface, const __u8 *src_mac,
				    __u64 now, int *reflect)
{
	struct hb_slot *s;
	__u32 peer;

	if (fr->version != HB_VERSION)
		return HB_C_VERSION;
	if (fr->reserved0 || fr->reserved1 ||
	    (fr->flags & ~(HB_F_ECHO_REQUEST | HB_F_ECHO_REPLY)) ||
	    fr->flags == (HB_F_ECHO_REQUEST | HB_F_ECHO_REPLY) ||
	    fr->link_id >= HB_MAX_LINKS)
		return HB_C_MALFORMED;
	if (fr->cluster_id != cfg->cluster_id)
		return HB_C_CLUSTER;
	if (fr->mac != frame_mac(fr, cfg->k0, cfg->k1))
		return HB_C_BAD_MAC;

	if (fr->flags & HB_F_ECHO_REPLY) {
		/* Our own request, reflected by the peer echo_node. */
		peer = fr->echo_node;
		if (fr->src_node != cfg->node_id || !valid_peer(cfg, peer))
			return HB_C_UNKNOWN_PEER;
		if (fr->link_id != iface->link_id)
			return HB_C_WRONG_LINK;
		s = slot_of(peer, fr->link_id);
		if (!s)
			return HB_C_UNKNOWN_PEER;
		if (fr->incarnation != cfg->incarnation || fr->seq <= s->last_echo_seq)
			return HB_C_REPLAY;
		bump_rise(s, cfg, now);
		__u64 rtt = age(now, fr->send_ns);

		if (s->rx_echo == 0)
			s->srtt_ns = rtt;
		else if (rtt >= s->srtt_ns)
			s->srtt_ns += (rtt - s->srtt_ns) / 8;
		else
			s->srtt_ns -= (s->srtt_ns - rtt) / 8;
		s->last_rtt_ns = rtt;
		s->echo_gap_ns = tx_gap(fr->link_id);
		s->last_echo_seq = fr->seq;
		s->last_echo_ns = now;
		s->rx_echo++;
		return HB_C_ECHO_REPLY;
	}

	/* A data frame from the peer src_node. */
	peer = fr->src_node;
	if (fr->echo_node || !valid_peer(cfg, peer))
		return HB_C_UNKNOWN_PEER;
	if (fr->link_id != iface->link_id)
		return HB_C_WRONG_LINK;
	s = slot_of(peer, fr->link_id);
	if (!s)
		return HB_C_UNKNOWN_PEER;
	if (fr->incarnation < s->incarnation ||
	    (fr->incarnation == s->incarnation && fr->seq <= s->last_seq))
		return HB_C_REPLAY;
	bump_rise(s, cfg, now);
	if (fr->incarnation > s->incarnation || s->rx_data == 0) {
		/* A new daemon (or the first frame): its sequence and progress
		 * counter start afresh. */
		s->incarnation = fr->incarnation;
		s->progress = fr->progress;
		s->progress_ns = now;
	} else {
		s->lost += fr->seq - s->last_seq - 1;
		if (fr->progress != s->progress) {
			s->progress = fr->progress;
			s->progress_ns = now;
		}
	}
	s->last_seq = fr->seq;
	s->last_data_ns = now;
	s->rx_data++;
	__builtin_memcpy(s->peer_mac, src_mac, ETH_ALEN);
	*reflect = fr->flags & HB_F_ECHO_REQUEST;
	return HB_C_DATA;
}

SEC("xdp")
int hb_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = NULL;
	struct udphdr *udp = NULL;
	struct hb_frame *pkt, fr;
	const struct hb_config *cfg;
	const struct hb_iface *iface;
	__u32 zero = 0, ifindex = ctx->ingress_ifindex, verdict;
	int reflect = 0;
	__u64 now;

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg)
		return XDP_PASS;

	if (eth->h_proto == bpf_htons(HB_ETH_P)) {
		pkt = (void *)(eth + 1);
	} else if (eth->h_proto == bpf_htons(ETH_P_IP) && cfg->udp_port) {
		ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > data_end || ip->protocol != IPPROTO_UDP ||
		    ip->ihl != 5 || (ip->frag_off & bpf_htons(0x3fff)))
			return XDP_PASS;
		udp = (void *)(ip + 1);
		if ((void *)(udp + 1) > data_end || udp->dest != bpf_htons(cfg->udp_port))
			return XDP_PASS;
		pkt = (void *)(udp + 1);
	} else {
		return XDP_PASS;
	}

	/* From here on the frame is a heartbeat: it never reaches the stack. */
	iface = bpf_map_lookup_elem(&ifaces, &ifindex);
	if (!iface) {
		count(HB_C_NOT_CONFIGURED);
		return XDP_DROP;
	}
	if ((void *)(pkt + 1) > data_end) {
		count(HB_C_MALFORMED);
		return XDP_DROP;
	}
	/* Work on an aligned copy; the packet copy is rewritten only to reflect. */
	__builtin_memcpy(&fr, pkt, sizeof(fr));
	now = clock_now(cfg);
	verdict = record(&fr, cfg, iface, eth->h_source, now, &reflect);
	count(verdict);
	if (verdict == HB_C_BAD_MAC) {
		__u32 l = iface->link_id;
		__u64 *v = bpf_map_lookup_elem(&link_bad_mac, &l);

		if (v)
			*v += 1;
	}
	if (!reflect)
		return XDP_DROP;

	fr.flags = HB_F_ECHO_REPLY;
	fr.echo_node = cfg->node_id;
	fr.echo_ns = now;
	fr.mac = frame_mac(&fr, cfg->k0, cfg->k1);
	__builtin_memcpy(pkt, &fr, sizeof(fr));
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, iface->mac, ETH_ALEN);
	if (ip && udp) {
		/* Swapping addresses and ports leaves the IP checksum valid;
		 * the UDP checksum is optional in IPv4 and left out. */
		__be32 a = ip->saddr;
		__be16 p = udp->source;

		ip->saddr = ip->daddr;
		ip->daddr = a;
		udp->source = udp->dest;
		udp->dest = p;
		udp->check = 0;
	}
	count(HB_C_ECHO_SENT);
	return XDP_TX;
}

struct sweep_ctx {
	const struct hb_config *cfg;
	__u64 now;
};

static __always_inline void emit(struct sweep_ctx *sc, __u32 peer, __u8 link, __u8 kind,
				 __u32 state, __u32 old, __u64 last_seen, __u32 links_up)
{
	struct hb_event ev = {
		.now_ns = sc->now,
		.last_seen_ns = last_seen,
		.peer = peer,
		.link = link,
		.kind = kind,
		.state = state,
		.old_state = old,
		.links_up = links_up,
	};

	bpf_ringbuf_output(&events, &ev, sizeof(ev), 0);
}

/* One peer's sweep, accumulated over its links by two bpf_loop callbacks (a
 * loop per link keeps the verifier from walking every combination of link
 * states). */
struct peer_sweep {
	struct sweep_ctx *sc;
	__u32 id;
	__u32 links_up;
	__u32 changed;		/* bit per link whose state changed */
	__u32 data_fresh;
	__u64 peer_seen;
	__u64 progress_ns;
	__u64 hold_from;	/* catch-up window open: hold what was fresh then */
	__u32 holding;
	__u32 late;		/* this pass opened the window */
};

/* Pause compensation: t (zero: never) was fresh at the sweep before a late one,
 * and that late pass's catch-up window is open. */
static __always_inline int held(const struct peer_sweep *ps, __u64 detect, __u64 t)
{
	return ps->holding && t && age(ps->hold_from, t) <= detect;
}

static long sweep_link(__u64 index, void *arg)
{
	struct peer_sweep *ps = arg;
	const struct hb_config *cfg = ps->sc->cfg;
	__u64 now = ps->sc->now, seen;
	__u32 link = index, st;
	struct hb_slot *s;
	int fresh, carrier;

	if (link >= HB_MAX_LINKS)
		return 1;
	s = slot_of(ps->id, link);
	if (!s)
		return 1;
	seen = max64(s->last_data_ns, s->last_echo_ns);
	carrier = !(cfg->links_down & (1u << link));
	fresh = carrier && seen &&
		(age(now, seen) <= cfg->detect_ns ||
		 (s->last_echo_ns > s->last_data_ns + cfg->detect_ns &&
		  echo_age(s, link, now) <= cfg->detect_ns));
	st = s->state;
	if (st == HB_LINK_UP && !fresh && carrier && held(ps, cfg->detect_ns, seen)) {
		if (ps->late)
			count(HB_C_HELD);
	} else if (st == HB_LINK_UP && !fresh) {
		s->state = HB_LINK_DOWN;
		s->rise = 0;
	} else if (st == HB_LINK_DOWN && fresh && s->rise >= cfg->rise) {
		s->state = HB_LINK_UP;
	}
	if (s->state != st) {
		s->since_ns = now;
		ps->changed |= 1u << link;
	}
	if (s->state == HB_LINK_UP)
		ps->links_up++;
	if (carrier && s->last_data_ns &&
	    (age(now, s->last_data_ns) <= cfg->detect_ns ||
	     held(ps, cfg->detect_ns, s->last_data_ns) ||
	     (fresh && s->last_echo_ns <= s->last_data_ns + cfg->detect_ns)))
		ps->data_fresh = 1;
	ps->peer_seen = max64(ps->peer_seen, seen);
	ps->progress_ns = max64(ps->progress_ns, s->progress_ns);
	return 0;
}

/* Link events go out after all links are swept, so each carries the peer's
 * final links_up. */
static long emit_link(__u64 index, void *arg)
{
	struct peer_sweep *ps = arg;
	__u32 link = index;
	struct hb_slot *s;

	if (link >= HB_MAX_LINKS)
		return 1;
	if (!(ps->changed & (1u << link)))
		return 0;
	s = slot_of(ps->id, link);
	/* A link has two states: one that changed came from the other. */
	if (s)
		emit(ps->sc, ps->id, link, HB_EV_LINK, s->state, !s->state,
		     max64(s->last_data_ns, s->last_echo_ns), ps->links_up);
	return 0;
}

static long sweep_peer(__u64 index, void *arg)
{
	struct sweep_ctx *sc = arg;
	const struct hb_config *cfg = sc->cfg;
	__u64 now = sc->now;
	struct peer_sweep ps = { .sc = sc, .id = index };
	__u32 id = index, state, jeopardy, nlinks;
	int frozen;
	struct hb_peer *p;

	if (id == 0 || id == cfg->node_id)
		return 0;
	p = bpf_map_lookup_elem(&peers, &id);
	if (!p || !p->configured)
		return 0;
	nlinks = cfg->nlinks < HB_MAX_LINKS ? cfg->nlinks : HB_MAX_LINKS;
	if (cfg->catchup_ns) {
		if (p->swept_ns && age(now, p->swept_ns) > cfg->detect_ns / 2) {
			/* A late pass: open a catch-up window. */
			count(HB_C_CATCHUP);
			ps.late = 1;
			p->hold_from_ns = p->swept_ns;
			p->hold_until_ns = now + cfg->catchup_ns;
		}
		ps.holding = now < p->hold_until_ns;
		ps.hold_from = p->hold_from_ns;
	}
	p->swept_ns = now;
	bpf_loop(nlinks, sweep_link, &ps, 0);
	bpf_loop(nlinks, emit_link, &ps, 0);

	frozen = cfg->progress_ns && age(now, ps.progress_ns) > cfg->progress_ns;
	state = p->state;
	if (ps.links_up == 0) {
		/* Unreachable; a peer never heard of gets detect from the
		 * start to show up. */
		if (state != HB_PEER_UNKNOWN || age(now, cfg->start_ns) > cfg->detect_ns)
			state = HB_PEER_DOWN;
	} else if (ps.data_fresh && !frozen) {
		state = HB_PEER_ALIVE;
	} else if (state == HB_PEER_DOWN) {
		/* Only its daemon speaking again brings a DOWN peer back. */
	} else if (state != HB_PEER_STALLED) {
		/* Kernel answers, daemon silent. */
		state = HB_PEER_STALLED;
		p->stalled_ns = now;
	} else if (age(now, p->stalled_ns) > cfg->stall_timeout_ns) {
		state = HB_PEER_DOWN;
	}
	if (state == HB_PEER_ALIVE)
		p->stalled_ns = 0;
	if (state != p->state) {
		emit(sc, id, HB_LINK_NONE, HB_EV_PEER, state, p->state, ps.peer_seen, ps.links_up);
		p->state = state;
		p->since_ns = now;
	}
	p->links_up = ps.links_up;

	jeopardy = ps.links_up == 1 && cfg->nlinks >= 2;
	if (jeopardy != p->jeopardy) {
		emit(sc, id, HB_LINK_NONE, HB_EV_JEOPARDY, jeopardy, p->jeopardy, ps.peer_seen, ps.links_up);
		p->jeopardy = jeopardy;
	}
	return 0;
}

static __always_inline void sweep(const struct hb_config *cfg)
{
	struct sweep_ctx sc = { .cfg = cfg, .now = clock_now(cfg) };

	bpf_loop(HB_MAX_NODES, sweep_peer, &sc, 0);
}

static int hb_sweep_cb(void *map, __u32 *key, struct hb_timer *t)
{
	__u32 zero = 0;
	const struct hb_config *cfg = bpf_map_lookup_elem(&config, &zero);

	if (!cfg || !cfg->sweep_ns)
		return 0;	/* stopped: not re-armed */
	sweep(cfg);
	bpf_timer_start(&t->timer, cfg->sweep_ns, 0);
	return 0;
}

/* Arm the sweep timer. Run once through BPF_PROG_TEST_RUN. */
SEC("xdp")
int hb_start(struct xdp_md *ctx)
{
	__u32 zero = 0;
	const struct hb_config *cfg = bpf_map_lookup_elem(&config, &zero);
	struct hb_timer *t = bpf_map_lookup_elem(&timers, &zero);
	long err;

	if (!cfg || !t || !cfg->sweep_ns)
		return XDP_ABORTED;
	err = bpf_timer_init(&t->timer, &timers, CLOCK_MONOTONIC);
	if (err && err != -16 /* -EBUSY: already initialised */)
		return XDP_ABORTED;
	if (bpf_timer_set_callback(&t->timer, hb_sweep_cb))
		return XDP_ABORTED;
	if (bpf_timer_start(&t->timer, cfg->sweep_ns, 0))
		return XDP_ABORTED;
	return XDP_PASS;
}

/* Sweep now. Run through BPF_PROG_TEST_RUN. */
SEC("xdp")
int hb_sweep(struct xdp_md *ctx)
{
	__u32 zero = 0;
	const struct hb_config *cfg = bpf_map_lookup_elem(&config, &zero);

	if (!cfg)
		return XDP_ABORTED;
	sweep(cfg);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
