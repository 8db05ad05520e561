//go:build ignore
// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
/*
 * xdp_stats: count every frame by ethertype class, drop what is too short to
 * be Ethernet, pass the rest. It is the smallest program that exercises the
 * whole bpf2go chain (C -> BTF -> generated Go -> load -> BPF_PROG_TEST_RUN).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "stats.h"

/*
 * Per-CPU counters indexed by enum stats_class. Per-CPU slots need no atomic
 * operations; user space sums the CPUs when it reads them.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STATS_CLASS_MAX);
	__type(key, __u32);
	__type(value, struct stats_counter);
} stats_counters SEC(".maps");

/*
 * Classify the frame between data and data_end. Kept out of line (a BPF to
 * BPF call) so its prototype, and with it enum stats_class, is recorded in
 * BTF, where bpf2go -type finds it.
 */
static __noinline enum stats_class classify(void *data, void *data_end)
{
	struct ethhdr *eth = data;

	/* The verifier insists on this bound check before eth is read. */
	if ((void *)(eth + 1) > data_end)
		return STATS_CLASS_MALFORMED;

	switch (bpf_ntohs(eth->h_proto)) {
	case ETH_P_IP:
		return STATS_CLASS_IPV4;
	case ETH_P_IPV6:
		return STATS_CLASS_IPV6;
	case ETH_P_ARP:
		return STATS_CLASS_ARP;
	case VIGIL_ETH_P_HEARTBEAT:
		return STATS_CLASS_HEARTBEAT;
	default:
		return STATS_CLASS_OTHER;
	}
}

SEC("xdp")
int xdp_stats(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 class = classify(data, data_end);
	struct stats_counter *c;

	c = bpf_map_lookup_elem(&stats_counters, &class);
	if (c) {	/* always found for class < max_entries */
		c->packets++;
		c->bytes += data_end - data;
	}

	return class == STATS_CLASS_MALFORMED ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
