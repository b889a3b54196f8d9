/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The events the tc programs write into the ring buffer, read back in bulk by
 * flowlog: a verdict (the first packet of a flow, or a denied packet) and a
 * flow's end. flowlog/records.py mirrors both structs as numpy dtypes;
 * tests/core/test_event_layout.py compiles this header and checks that every
 * size and offset agrees.
 */
#ifndef FLOWLOG_FLOW_EVENT_H
#define FLOWLOG_FLOW_EVENT_H

#include <linux/types.h>

/* Codes shared with the AWS network policy agent's events. */
enum flow_verdict {
	VERDICT_DENY = 0,
	VERDICT_ACCEPT = 1,
	VERDICT_EXPIRED = 2, /* the flow ended: closed, or idle past its timeout */
};

enum flow_tier {
	TIER_ADMIN = 1,
	TIER_NETWORK_POLICY = 2,
	TIER_BASELINE = 3,
	TIER_DEFAULT = 4, /* no policy decided: standard or strict mode default */
};

/* A verdict: VERDICT_ACCEPT or VERDICT_DENY. */
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
	__u32 packet_size;  /* bytes of the packet that was judged; 0 in a flow_end */
	__u32 ifindex;      /* the pod's host-side veth */
	__u32 endpoint_id;  /* the local pod, as numbered by the agent; 0 unknown */
	__u32 policy_id;    /* the policy that decided, as numbered by the agent; 0 none */
};

/* A flow's end (VERDICT_EXPIRED): the flow as its first packet travelled,
 * stamped when it ended, with what it carried. Bytes are L3 lengths. */
struct flow_end {
	struct flow_event flow;
	__u64 start_ns;         /* first packet, CLOCK_MONOTONIC */
	__u64 last_ns;          /* last packet counted */
	__u64 packets_sent;     /* from the flow's source (src_ip) to its destination */
	__u64 bytes_sent;
	__u64 packets_received; /* from the destination back to the source */
	__u64 bytes_received;
};

#endif /* FLOWLOG_FLOW_EVENT_H */
