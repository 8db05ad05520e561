/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * Vigil's heartbeat plane: the wire format, the per-(peer, link) state the XDP
 * program records, the rules the bpf_timer sweep applies, and the events it
 * sends to user space. This header is the single definition; bpf2go exports
 * the types to Go (dataplane/), and heartbeat/ implements the same rules in
 * pure Go for the user-space fallback. Tests on both sides hold them together.
 *
 * Wire format
 * -----------
 * A heartbeat is a struct hb_frame (64 bytes, every multi-byte field
 * little-endian), carried either right after an Ethernet header with
 * ethertype HB_ETH_P (0x88B5), or as the whole payload of an IPv4 UDP
 * datagram to port cfg.udp_port for routed links.
 *
 * Every node sends one frame per link and interval, with HB_F_ECHO_REQUEST
 * set, to the broadcast address of the link (or to each peer for UDP). The
 * frame is a data heartbeat: it tells the receivers that the sender's daemon
 * is alive. The receiving kernel also reflects it (BFD echo style): XDP sets
 * HB_F_ECHO_REPLY instead of HB_F_ECHO_REQUEST, writes its own node id into
 * echo_node and its clock into echo_ns, recomputes the MAC and sends the frame
 * back with XDP_TX. The original sender's kernel gets the reply: proof that
 * the peer's kernel is alive on that link, whatever the peer's daemon does,
 * and the round-trip time (now - send_ns, both on the sender's clock).
 *
 * The MAC is SipHash-2-4 with the 128-bit cluster key (k0 = first 8 key bytes
 * little-endian, k1 = the next 8) over the first 56 bytes of the frame.
 *
 * Checks on receive, in order, each with its counter (enum hb_counter):
 *   frame shorter than 64 bytes ................ MALFORMED
 *   version != HB_VERSION ...................... VERSION
 *   reserved fields non-zero, unknown flags or
 *   both echo flags, link_id out of range ...... MALFORMED
 *   cluster_id != cfg.cluster_id ............... CLUSTER
 *   MAC wrong .................................. BAD_MAC
 *   node ids out of range or not a configured
 *   peer, or the sender (data
 *   frame) / reflector (reply) is this node,
 *   or a reply to another node's request ...... UNKNOWN_PEER
 *   link_id != the link of the receiving
 *   interface ................................. WRONG_LINK
 *   replayed (see below) ....................... REPLAY
 * Heartbeat frames are always dropped after processing (or reflected); all
 * other traffic passes untouched.
 *
 * Replay: a data frame is accepted when its incarnation is greater than the
 * slot's, or equal with a greater seq. A greater incarnation (the peer's
 * daemon restarted) resets the sequence tracking. An echo reply is accepted
 * when its incarnation equals cfg.incarnation (this daemon's) and its seq is
 * greater than the slot's last_echo_seq.
 *
 * Detection rules (the sweep, every cfg.sweep_ns, at time now)
 * ------------------------------------------------------------
 * Let detect = cfg.detect_ns (interval x multiplier) and, for a slot,
 * seen = max(last_data_ns, last_echo_ns). A slot counts as fresh when
 * now - seen <= detect (or its echo age, below, is <= detect) and its link is
 * not in cfg.links_down (user space sets
 * that bit when netlink reports the local interface without carrier, so the
 * link goes down at the next sweep instead of after detect).
 *
 * Echo silence counts only while this node was sending. Echo replies answer
 * this node's own requests, so they stop when its sender stops (a stalled or
 * killed daemon, a vCPU the hypervisor did not run), whatever the peer does.
 * The sender stamps, per link, a struct hb_tx in the mmapable map txstamps:
 * due_ns, the time by which it promises its next send (its next deadline plus
 * half an interval of slack), and gap_ns, the sum over its sends of how late
 * each came after the due_ns before it. The XDP program copies gap_ns into
 * the slot's echo_gap_ns when it records an echo reply. The echo age of a
 * slot is then
 *   now - last_echo_ns, less the time the sender was quiet since then:
 *   (gap_ns - echo_gap_ns) for gaps already over, plus now - due_ns when the
 *   sender is overdue now (each part only when positive; never below zero)
 * and it replaces now - last_echo_ns in the freshness below when the slot is
 * echo-only: last_echo_ns > last_data_ns + detect (the peer's kernel has
 * answered for more than detect after its daemon last spoke: the slot of a
 * STALLED peer). A slot whose data was fresh when its last echo came keeps the
 * plain ages, so a link to a live peer that dies while this node's sender is
 * stalled still goes down on the data's silence. A due_ns of zero (no sender
 * stamped, or tests) leaves the plain age. With a punctual sender the quiet time is zero and
 * nothing changes. A peer whose daemon was killed, seen through its kernel's
 * echoes only, therefore stays STALLED (not DOWN) while this node's own
 * sender stalls, and a failure is judged on the requests really sent.
 *
 * Link (per peer and link), with hysteresis:
 *   DOWN -> UP    when fresh and rise >= cfg.rise (rise counts
 *                 valid frames, data or echo, that arrived no more than detect
 *                 apart since the link was last quiet; XDP keeps it)
 *   UP -> DOWN    when not fresh
 *
 * Peer (per configured peer), from its links:
 *   links_up = number of its links in state UP
 *   data_fresh = some link not in links_down where the peer's daemon still
 *                 speaks: now - last_data_ns <= detect, or the link is fresh
 *                 and last_echo_ns <= last_data_ns + detect (echoes have not
 *                 outlived the last data frame by more than detect: when a
 *                 node is cut off, its last echo may arrive an interval after
 *                 its last data frame, and that is no stall)
 *   progress_frozen = cfg.progress_ns != 0 and the progress counter in the
 *                 peer's data frames has not changed for more than
 *                 cfg.progress_ns
 *   links_up == 0                       -> DOWN (from UNKNOWN only once
 *                                          now - cfg.start_ns > detect)
 *   links_up > 0, data_fresh,
 *     not progress_frozen               -> ALIVE
 *   links_up > 0 otherwise              -> STALLED: the kernel answers but the
 *                                          daemon does not; after
 *                                          cfg.stall_timeout_ns in STALLED
 *                                          -> DOWN (and it stays DOWN until
 *                                          it is ALIVE again)
 * Jeopardy (per peer): links_up == 1 while cfg.nlinks >= 2 (reachable through
 * only one channel). Set and cleared with its own event.
 *
 * Pause compensation (when cfg.catchup_ns != 0). Each peer remembers when the
 * sweep last examined it (swept_ns). A sweep that finds that more than
 * detect / 2 ago ran late: its timer could not run (a stalled CPU, a vCPU the
 * hypervisor did not run), and the staleness the slots gathered meanwhile may
 * be the stall's rather than the peer's, since the local receive path and any
 * sender on the same CPU stalled with it. Such a late pass opens a catch-up
 * window: hold_from_ns = the previous sweep, hold_until_ns = now +
 * cfg.catchup_ns (the daemon uses one interval: time for the senders to send
 * again and the receive path to record it). While now < hold_until_ns, a slot
 * whose seen was fresh at hold_from_ns (hold_from_ns - seen <= detect) is
 * held: an UP link is not taken DOWN, and data that was fresh at hold_from_ns
 * counts as data_fresh. Nothing else changes: local carrier loss is not held,
 * a link never comes UP by being held, and a slot already stale before the
 * stall is not held. Without late passes (a sweep every cfg.sweep_ns, well
 * under detect / 2) the rules above apply unchanged; after a late pass at t a
 * real failure is detected by the first sweep at or after t + catchup_ns, and
 * since hold_from_ns only moves forward, repeated late passes cannot hold a
 * silent slot beyond the first window opened after it became stale.
 *
 * Every change is one struct hb_event on the ring buffer, link events first,
 * then the peer event, then jeopardy.
 */
#ifndef VIGIL_BPF_HEARTBEAT_H
#define VIGIL_BPF_HEARTBEAT_H

#include <linux/types.h>

#define HB_ETH_P	0x88B5	/* IEEE 802 local experimental ethertype 1 */
#define HB_VERSION	1
#define HB_MAX_NODES	64	/* node ids 1 .. HB_MAX_NODES-1 */
#define HB_MAX_LINKS	4	/* link ids 0 .. HB_MAX_LINKS-1 */
#define HB_MAC_OFF	56	/* bytes covered by the MAC */
#define HB_LINK_NONE	0xff	/* hb_event.link of peer events */

enum hb_flags {
	HB_F_ECHO_REQUEST = 1 << 0,	/* reflect me */
	HB_F_ECHO_REPLY = 1 << 1,	/* I am a reflection */
};

/* The frame on the wire. Little-endian, no padding (offsets in comments). */
struct hb_frame {
	__u8 version;		/*  0: HB_VERSION */
	__u8 flags;		/*  1: enum hb_flags */
	__u8 link_id;		/*  2: the link the sender sent it on */
	__u8 reserved0;		/*  3: zero */
	__u32 cluster_id;	/*  4 */
	__u16 src_node;		/*  8: sender of the original frame */
	__u16 echo_node;	/* 10: reflector of an echo reply; zero otherwise */
	__u32 reserved1;	/* 12: zero */
	__u64 incarnation;	/* 16: sender daemon's incarnation (grows at each start) */
	__u64 seq;		/* 24: per (sender, link), grows by one per frame */
	__u64 send_ns;		/* 32: sender's CLOCK_MONOTONIC at send */
	__u64 progress;		/* 40: sender daemon's progress counter */
	__u64 echo_ns;		/* 48: reflector's CLOCK_MONOTONIC; zero in requests */
	__u64 mac;		/* 56: SipHash-2-4 of bytes 0..55 */
};

/* Why a frame was counted (a per-CPU array of __u64 indexed by this). */
enum hb_counter {
	HB_C_DATA = 0,		/* valid data frames recorded */
	HB_C_ECHO_REPLY,	/* valid echo replies recorded */
	HB_C_ECHO_SENT,		/* echo replies sent with XDP_TX */
	HB_C_MALFORMED,
	HB_C_VERSION,
	HB_C_CLUSTER,
	HB_C_BAD_MAC,
	HB_C_UNKNOWN_PEER,
	HB_C_WRONG_LINK,
	HB_C_REPLAY,
	HB_C_NOT_CONFIGURED,	/* heartbeat frame on an interface without a link */
	HB_C_CATCHUP,		/* sweeps of a peer that ran late: catch-up windows opened */
	HB_C_HELD,		/* ... and, in those sweeps, UP links held that were stale */
	HB_C_MAX,
};

enum hb_link_state {
	HB_LINK_DOWN = 0,
	HB_LINK_UP = 1,
};

enum hb_peer_state {
	HB_PEER_UNKNOWN = 0,
	HB_PEER_ALIVE = 1,
	HB_PEER_STALLED = 2,	/* kernel echoes, daemon silent */
	HB_PEER_DOWN = 3,
};

enum hb_event_kind {
	HB_EV_LINK = 1,		/* state: enum hb_link_state */
	HB_EV_PEER = 2,		/* state: enum hb_peer_state */
	HB_EV_JEOPARDY = 3,	/* state: 1 entered, 0 left */
};

/* Configuration, one entry of an array map, written by user space. */
struct hb_config {
	__u64 k0, k1;		/* cluster key */
	__u64 incarnation;	/* this daemon's */
	__u64 detect_ns;	/* interval x multiplier */
	__u64 stall_timeout_ns;	/* STALLED -> DOWN */
	__u64 progress_ns;	/* progress frozen this long -> STALLED; 0 off */
	__u64 sweep_ns;		/* timer period */
	__u64 start_ns;		/* when detection started (UNKNOWN grace) */
	__u64 now_ns;		/* tests only: if non-zero, the clock */
	__u32 cluster_id;
	__u32 rise;		/* frames to bring a link up */
	__u32 nlinks;		/* configured links */
	__u16 node_id;		/* this node */
	__u16 udp_port;		/* heartbeats in UDP: destination port */
	__u32 links_down;	/* bit per link id: down by local carrier loss */
	__u32 pad;
	__u64 catchup_ns;	/* pause compensation window; 0 off */
};

/* A receiving interface: which link it is and its own MAC (for replies). */
struct hb_iface {
	__u32 link_id;
	__u8 mac[6];
	__u8 pad[2];
};

/* One (peer, link), index peer * HB_MAX_LINKS + link of an mmapable array. */
struct hb_slot {
	__u64 last_data_ns;	/* kernel time of the last valid data frame */
	__u64 last_echo_ns;	/* ... of the last valid echo reply */
	__u64 incarnation;	/* the peer's, from its data frames */
	__u64 last_seq;		/* last data seq accepted */
	__u64 last_echo_seq;	/* our seq in the last echo reply accepted */
	__u64 rx_data;
	__u64 rx_echo;
	__u64 lost;		/* data frames missing by sequence gaps */
	__u64 last_rtt_ns;
	__u64 srtt_ns;		/* smoothed: srtt += (rtt - srtt) / 8 */
	__u64 progress;		/* the peer's last progress counter */
	__u64 progress_ns;	/* when it last changed */
	__u64 since_ns;		/* when state last changed (sweep) */
	__u32 state;		/* enum hb_link_state (sweep) */
	__u32 rise;		/* consecutive frames (XDP); reset by the sweep */
	__u8 peer_mac[6];	/* learned from the peer's data frames */
	__u8 pad[2];
	__u64 echo_gap_ns;	/* txstamps gap_ns when the last echo was recorded */
};

/* This node's sender on one link, index link id of an mmapable array written
 * by user space (see "Echo silence counts only while this node was sending"). */
struct hb_tx {
	__u64 sent_ns;		/* last send (CLOCK_MONOTONIC) */
	__u64 due_ns;		/* the next send is due by then; 0: no sender */
	__u64 gap_ns;		/* total time sends came after their due_ns */
};

/* One peer, index by node id, written by the sweep. */
struct hb_peer {
	__u64 since_ns;		/* when state last changed */
	__u64 stalled_ns;	/* when it became STALLED */
	__u32 state;		/* enum hb_peer_state */
	__u32 links_up;
	__u32 jeopardy;
	__u32 configured;	/* user space sets 1 for every peer */
	__u64 swept_ns;		/* the last sweep that examined it */
	__u64 hold_from_ns;	/* pause compensation: the sweep before a late one */
	__u64 hold_until_ns;	/* ... and the end of its catch-up window */
};

/* A transition, sent to user space on the ring buffer. */
struct hb_event {
	__u64 now_ns;		/* sweep time that saw it */
	__u64 last_seen_ns;	/* last valid frame from the peer (on the link) */
	__u16 peer;
	__u8 link;		/* or HB_LINK_NONE */
	__u8 kind;		/* enum hb_event_kind */
	__u32 state;
	__u32 old_state;
	__u32 links_up;
};

/*
 * The slot map, defined once for both programs that use it: heartbeat.c owns it (readable by
 * user space without syscalls, Map.Memory()); steer.c declares the same map and is given
 * heartbeat.c's at load time (MapReplacements), which needs an identical definition.
 */
#define HB_SLOTS_MAP							\
	struct {							\
		__uint(type, BPF_MAP_TYPE_ARRAY);			\
		__uint(map_flags, BPF_F_MMAPABLE);			\
		__uint(max_entries, HB_MAX_NODES * HB_MAX_LINKS);	\
		__type(key, __u32);					\
		__type(value, struct hb_slot);				\
	} slots SEC(".maps")

#endif /* VIGIL_BPF_HEARTBEAT_H */
