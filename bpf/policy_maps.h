/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Keys and values of the maps that hold the policy: written by flowlog from
 * PolicyEndpoint documents, read by the tc programs in tc_policy.c.
 * flowlog/dataplane/maps.py mirrors every struct here as a ctypes Structure;
 * tests/dataplane/test_map_layout.py compiles this header and checks that
 * every size and offset agrees.
 */
#ifndef FLOWLOG_POLICY_MAPS_H
#define FLOWLOG_POLICY_MAPS_H

#include <linux/types.h>

/* Port entries per allowed prefix, the AWS agent's limit. */
#define MAX_PORT_RULES 24

/* endpoint.flags: the directions some policy isolates. */
#define ENDPOINT_INGRESS_ISOLATED 1
#define ENDPOINT_EGRESS_ISOLATED 2

/* endpoints: host-side veth ifindex -> the pod behind it. */
struct endpoint {
	__u32 endpoint_id;       /* the pod, as numbered by the agent */
	__u32 flags;             /* ENDPOINT_*_ISOLATED */
	__u32 rules_id;          /* key of this pod's current rules; changes on every update */
	__u32 ingress_policy_id; /* blamed for an ingress default deny; 0: strict-mode default */
	__u32 egress_policy_id;  /* blamed for an egress default deny; 0: strict-mode default */
};

/* ingress_rules / egress_rules (LPM tries): the remote peer's address. */
struct rule_key {
	__u32 prefixlen; /* 32 bits of rules_id plus the address prefix */
	__u32 rules_id;
	__u8 ip[16];     /* IPv4 as ::ffff:a.b.c.d */
};

struct port_rule {
	__u32 policy_id; /* the policy that allows it */
	__u16 port;      /* first port, host byte order; 0: any port */
	__u16 end_port;  /* last port, inclusive */
	__u8 protocol;   /* IPPROTO_*; 0: any protocol */
	__u8 pad[3];
};

/* Everything allowed for one prefix: the union over all policies of the pod. */
struct rule_value {
	__u32 count; /* entries in use; 0: nothing allowed (an except) */
	struct port_rule ports[MAX_PORT_RULES];
};

/* conntrack (LRU): flows already allowed, with what they carried. The key
 * holds both ends in a fixed order (the lower address, then port, first), so a
 * packet and its replies find the same entry with one lookup. */
struct flow_key {
	__u8 lower_ip[16];
	__u8 upper_ip[16];
	__u16 lower_port; /* host byte order; ICMP echo: the identifier, both ports */
	__u16 upper_port;
	__u8 protocol;
	__u8 pad[3];
	__u32 ifindex;    /* the pod's veth: each pod keeps its own view of a flow */
};

/* flow_state.flags */
#define FLOW_SOURCE_IS_UPPER 1 /* the flow's first packet came from the key's upper end */
#define FLOW_FIN_SENT 2        /* FIN from the flow's source */
#define FLOW_FIN_RECEIVED 4    /* FIN from its destination */
#define FLOW_RESET 8           /* RST either way */
#define FLOW_ENDED 16          /* its flow_end has been written; counters are final */

/* flow_state.packets and .bytes: the flow's two directions. */
#define FLOW_SENT 0     /* from the flow's source to its destination */
#define FLOW_RECEIVED 1 /* back */

struct flow_state {
	__u64 start_ns;   /* first packet, CLOCK_MONOTONIC */
	__u64 last_ns;    /* latest packet counted */
	__u64 packets[2]; /* FLOW_SENT, FLOW_RECEIVED */
	__u64 bytes[2];   /* L3 bytes */
	__u64 flags;      /* FLOW_*; 64 bits wide for the atomic fetch-or */
	__u32 policy_id;  /* the policy that allowed the flow; 0: no policy needed */
	__u32 endpoint_id;
	__u8 is_egress;   /* of the first packet */
	__u8 tier;
	__u8 pad[6];
};

/* settings (ARRAY of __u32): switches flowlog flips at run time, one slot
 * each so that the agent and `flowlog ebpf events` never overwrite each other. */
#define SETTING_EMIT_EVENTS 0 /* write verdicts to policy_events (enablePolicyEventLogs) */
#define SETTING_TAP_EVENTS 1  /* also write them to tap_events (flowlog ebpf events) */
#define SETTING_STRICT 2      /* strict mode: an attached veth without an endpoint denies */
#define SETTINGS_COUNT 3

/* pod_names / policy_names: endpoint_id or policy_id -> what it stands for,
 * for readers in other processes (flowlog ebpf events). */
struct object_name {
	char namespace[64];
	char name[256];
};

/* ringbuf_lost (PERCPU_ARRAY) slots. */
#define LOST_POLICY_EVENTS 0
#define LOST_TAP_EVENTS 1

#endif /* FLOWLOG_POLICY_MAPS_H */
