/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The verdict event: written into the ring buffer by the tc programs and read
 * back in bulk by flowlog. flowlog/records.py mirrors this struct as the numpy
 * dtype FLOW_EVENT; tests/test_event_layout.py compiles this header and checks
 * that every size and offset agrees.
 */
#ifndef FLOWLOG_FLOW_EVENT_H
#define FLOWLOG_FLOW_EVENT_H

#include <linux/types.h>

/* Codes shared with the AWS network policy agent's events. */
enum flow_verdict {
	VERDICT_DENY = 0,
	VERDICT_ACCEPT = 1,
	VERDICT_EXPIRED = 2, /* conntrack entry expired or deleted */
};

enum flow_tier {
	TIER_ADMIN = 1,
	TIER_NETWORK_POLICY = 2,
	TIER_BASELINE = 3,
	TIER_DEFAULT = 4, /* no policy decided: standard or strict mode default */
};

struct flow_event {
	__u64 timestamp_ns; /* bpf_ktime_get_ns(), CLOCK_MONOTONIC */
	__u8 src_ip[16];    /* as in the packet; IPv4 as ::ffff:a.b.c.d */
	__u8 dest_ip[16];
	__u16 src_port;     /* host byte order; 0 for ICMP */
	__u16 dest_port;
	__u8 protocol;      /* IPPROTO_* */
	__u8 verdict;       /* enum flow_verdict */
	__u8 is_egress;     /* 1: traffic leaving the pod, 0: entering it */
	__u8 tier;          /* enum flow_tier */
	__u32 packet_size;  /* bytes of the packet that was judged */
	__u32 ifindex;      /* the pod's host-side veth */
	__u32 endpoint_id;  /* the local pod, as numbered by the agent; 0 unknown */
	__u32 policy_id;    /* the policy that decided, as numbered by the agent; 0 none */
};

#endif /* FLOWLOG_FLOW_EVENT_H */
