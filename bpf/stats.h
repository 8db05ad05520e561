/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * Definitions shared by stats.c and its Go loader in dataplane/.
 *
 * bpf2go exports the two types below to Go (-type stats_class
 * -type stats_counter), so the Go side never restates them by hand; a Go
 * test in dataplane/ fails if the two sides drift apart.
 */
#ifndef VIGIL_BPF_STATS_H
#define VIGIL_BPF_STATS_H

#include <linux/types.h>

/* Ethertype of Vigil's heartbeat frames (IEEE 802 local experimental 1). */
#define VIGIL_ETH_P_HEARTBEAT 0x88B5

/*
 * The class a frame is counted in, chosen by its ethertype. The values index
 * the counters map, so they are dense and start at zero; append new classes
 * just before STATS_CLASS_MAX.
 */
enum stats_class {
	STATS_CLASS_IPV4 = 0,	/* ETH_P_IP */
	STATS_CLASS_IPV6,	/* ETH_P_IPV6 */
	STATS_CLASS_ARP,	/* ETH_P_ARP */
	STATS_CLASS_HEARTBEAT,	/* VIGIL_ETH_P_HEARTBEAT */
	STATS_CLASS_OTHER,	/* any other ethertype, VLAN tags included */
	STATS_CLASS_MALFORMED,	/* data_end - data < ETH_HLEN; dropped */
	STATS_CLASS_MAX,	/* number of classes, not a class */
};

/*
 * One CPU's counters for one class. Bytes are the frame length XDP sees,
 * from the Ethernet header to the end of the linear data (no FCS).
 */
struct stats_counter {
	__u64 packets;
	__u64 bytes;
};

#endif /* VIGIL_BPF_STATS_H */
