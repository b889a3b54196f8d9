/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Network policy for one pod, enforced on its host-side veth, compiled by bcc.
 *
 * handle_ingress sees traffic into the pod (the veth's tc egress hook),
 * handle_egress traffic out of it (the veth's tc ingress hook). The first
 * packet of a flow is judged against the pod's rules and reported in
 * policy_events; allowed flows enter conntrack, so their later packets and
 * replies pass without a lookup in the rules or an event. Denied packets
 * are judged (and reported) every time. A bare TCP SYN always opens a new
 * connection, so it is always judged.
 *
 * Compiled with -DRINGBUF_PAGES, -DTAP_PAGES, -DCONNTRACK_ENTRIES and
 * -DCONNTRACK_PIN (where conntrack is pinned, so a restarted agent keeps it).
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/icmp.h>
#include <uapi/linux/icmpv6.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/tcp.h>

#include "flow_event.h"
#include "policy_maps.h"

/* Room for Ethernet, IPv6, one hop-by-hop header and the ports. */
#define HEADER_BYTES 128
#define IPV4_FRAGMENT_OFFSET 0x1fff
#define ICMPV6_NDISC_REDIRECT 137 /* the last neighbour discovery type */

BPF_HASH(endpoints, __u32, struct endpoint, 1024);
BPF_F_TABLE("lpm_trie", struct rule_key, struct rule_value, ingress_rules, 65536, BPF_F_NO_PREALLOC);
BPF_F_TABLE("lpm_trie", struct rule_key, struct rule_value, egress_rules, 65536, BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("lru_hash", struct flow_key, struct flow_state, conntrack, CONNTRACK_ENTRIES,
		 CONNTRACK_PIN);
BPF_RINGBUF_OUTPUT(policy_events, RINGBUF_PAGES);
BPF_RINGBUF_OUTPUT(tap_events, TAP_PAGES);
BPF_PERCPU_ARRAY(ringbuf_lost, __u64, 2);
BPF_ARRAY(settings, __u32, SETTINGS_COUNT);
/* Not read here: pinned with the rest for readers in other processes. */
BPF_F_TABLE("hash", __u32, struct object_name, pod_names, 65536, BPF_F_NO_PREALLOC);
BPF_F_TABLE("hash", __u32, struct object_name, policy_names, 65536, BPF_F_NO_PREALLOC);

enum parse_result {
	JUDGE, /* an IP packet to judge */
	PASS,  /* not ours to judge: non-IP, neighbour discovery, ICMP errors */
};

struct packet {
	struct flow_key flow; /* the packet as it travels */
	__u16 icmp_id;        /* ICMP echo identifier, part of the flow key only */
	__u8 bare_syn;        /* TCP SYN without ACK: a new connection */
};

struct l4_ports {
	__be16 source;
	__be16 dest;
};

static __always_inline void map_ipv4(__u8 *out, __be32 addr)
{
	__builtin_memset(out, 0, 10);
	out[10] = 0xff;
	out[11] = 0xff;
	__builtin_memcpy(out + 12, &addr, 4);
}

/* Ports (TCP, UDP, SCTP) or the ICMP echo identifier at l4; PASS for ICMP
 * that belongs to the network itself rather than to a flow. */
static __always_inline int parse_l4(struct packet *pkt, void *l4, void *data_end)
{
	__u8 protocol = pkt->flow.protocol;

	if (protocol == IPPROTO_TCP || protocol == IPPROTO_UDP || protocol == IPPROTO_SCTP) {
		struct l4_ports *ports = l4;

		if ((void *)(ports + 1) > data_end)
			return JUDGE;
		pkt->flow.src_port = bpf_ntohs(ports->source);
		pkt->flow.dest_port = bpf_ntohs(ports->dest);
		if (protocol == IPPROTO_TCP) {
			struct tcphdr *tcp = l4;

			if ((void *)(tcp + 1) <= data_end)
				pkt->bare_syn = tcp->syn && !tcp->ack;
		}
		return JUDGE;
	}
	if (protocol == IPPROTO_ICMP) {
		struct icmphdr *icmp = l4;

		if ((void *)(icmp + 1) > data_end)
			return JUDGE;
		/* Errors about a flow (unreachable, quench, redirect, time exceeded,
		 * parameter problem) cannot open one; they pass like the flow's replies. */
		if (icmp->type == ICMP_DEST_UNREACH || icmp->type == ICMP_SOURCE_QUENCH ||
		    icmp->type == ICMP_REDIRECT || icmp->type == ICMP_TIME_EXCEEDED ||
		    icmp->type == ICMP_PARAMETERPROB)
			return PASS;
		if (icmp->type == ICMP_ECHO || icmp->type == ICMP_ECHOREPLY)
			pkt->icmp_id = bpf_ntohs(icmp->un.echo.id);
		return JUDGE;
	}
	if (protocol == IPPROTO_ICMPV6) {
		struct icmp6hdr *icmp6 = l4;

		if ((void *)(icmp6 + 1) > data_end)
			return JUDGE;
		/* Errors (types 1-4) as for IPv4; multicast listener and neighbour
		 * discovery messages (130-137, 143) keep the link working. */
		if (icmp6->icmp6_type <= ICMPV6_PARAMPROB ||
		    (icmp6->icmp6_type >= ICMPV6_MGM_QUERY && icmp6->icmp6_type <= ICMPV6_NDISC_REDIRECT) ||
		    icmp6->icmp6_type == ICMPV6_MLD2_REPORT)
			return PASS;
		if (icmp6->icmp6_type == ICMPV6_ECHO_REQUEST || icmp6->icmp6_type == ICMPV6_ECHO_REPLY)
			pkt->icmp_id = bpf_ntohs(icmp6->icmp6_identifier);
	}
	return JUDGE;
}

static __always_inline int parse_packet(struct __sk_buff *skb, struct packet *pkt)
{
	if (skb->data_end - skb->data < skb->len && skb->data_end - skb->data < HEADER_BYTES)
		bpf_skb_pull_data(skb, HEADER_BYTES);

	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return PASS;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > data_end || ip->ihl < 5)
			return PASS;
		map_ipv4(pkt->flow.src_ip, ip->saddr);
		map_ipv4(pkt->flow.dest_ip, ip->daddr);
		pkt->flow.protocol = ip->protocol;
		/* Later fragments carry no ports: judged on addresses and protocol. */
		if (ip->frag_off & bpf_htons(IPV4_FRAGMENT_OFFSET))
			return JUDGE;
		return parse_l4(pkt, (void *)ip + ip->ihl * 4, data_end);
	}
	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		void *l4 = ip6 + 1;

		if (l4 > data_end)
			return PASS;
		__builtin_memcpy(pkt->flow.src_ip, &ip6->saddr, 16);
		__builtin_memcpy(pkt->flow.dest_ip, &ip6->daddr, 16);
		pkt->flow.protocol = ip6->nexthdr;
		/* One hop-by-hop header (multicast listener reports carry it) is
		 * skipped; any other extension header is judged as protocol UNKNOWN. */
		if (pkt->flow.protocol == IPPROTO_HOPOPTS) {
			struct ipv6_opt_hdr *hop = l4;

			if ((void *)(hop + 1) > data_end)
				return JUDGE;
			pkt->flow.protocol = hop->nexthdr;
			l4 += (hop->hdrlen + 1) * 8;
		}
		return parse_l4(pkt, l4, data_end);
	}
	return PASS;
}

/* Whether this packet belongs to a flow the pod already allowed: the same
 * direction as its first packet, or a reply to it. */
static __always_inline bool is_known_flow(const struct packet *pkt)
{
	struct flow_key key = pkt->flow;

	if (pkt->icmp_id)
		key.src_port = key.dest_port = pkt->icmp_id;
	if (conntrack.lookup(&key))
		return true;
	__builtin_memcpy(key.src_ip, pkt->flow.dest_ip, 16);
	__builtin_memcpy(key.dest_ip, pkt->flow.src_ip, 16);
	key.src_port = pkt->icmp_id ? pkt->icmp_id : pkt->flow.dest_port;
	key.dest_port = pkt->icmp_id ? pkt->icmp_id : pkt->flow.src_port;
	return conntrack.lookup(&key) != NULL;
}

static __always_inline void remember_flow(const struct packet *pkt, struct flow_event *event)
{
	struct flow_key key = pkt->flow;
	struct flow_state state = {.policy_id = event->policy_id, .is_egress = event->is_egress};
	struct flow_state *known;

	if (pkt->icmp_id)
		key.src_port = key.dest_port = pkt->icmp_id;
	/* A repeated SYN finds its flow already there: a lookup is far cheaper
	 * than an LRU update. */
	known = conntrack.lookup(&key);
	if (known && known->policy_id == state.policy_id && known->is_egress == state.is_egress)
		return;
	conntrack.update(&key, &state);
}

/* The first port entry allowing this packet to or from `remote`, or NULL. */
static __always_inline struct port_rule *find_port_rule(const struct endpoint *ep,
							 const struct packet *pkt,
							 const __u8 *remote, bool is_egress)
{
	struct rule_key key = {.prefixlen = 32 + 128, .rules_id = ep->rules_id};
	struct rule_value *rules;
	__u16 port = pkt->flow.dest_port;

	__builtin_memcpy(key.ip, remote, 16);
	rules = is_egress ? egress_rules.lookup(&key) : ingress_rules.lookup(&key);
	if (!rules)
		return NULL;
	for (int i = 0; i < MAX_PORT_RULES; i++) {
		struct port_rule *rule = &rules->ports[i];

		if (i >= rules->count)
			break;
		if (rule->protocol && rule->protocol != pkt->flow.protocol)
			continue;
		if (!rule->port || (port >= rule->port && port <= rule->end_port))
			return rule;
	}
	return NULL;
}

static __always_inline void judge(const struct endpoint *ep, const struct packet *pkt,
				  bool is_egress, struct flow_event *event)
{
	__u32 isolated = is_egress ? ENDPOINT_EGRESS_ISOLATED : ENDPOINT_INGRESS_ISOLATED;
	const __u8 *remote = is_egress ? pkt->flow.dest_ip : pkt->flow.src_ip;
	struct port_rule *rule;

	if (!(ep->flags & isolated)) {
		event->verdict = VERDICT_ACCEPT;
		event->tier = TIER_DEFAULT;
		return;
	}
	rule = find_port_rule(ep, pkt, remote, is_egress);
	if (rule) {
		event->verdict = VERDICT_ACCEPT;
		event->tier = TIER_NETWORK_POLICY;
		event->policy_id = rule->policy_id;
		return;
	}
	event->verdict = VERDICT_DENY;
	event->policy_id = is_egress ? ep->egress_policy_id : ep->ingress_policy_id;
	event->tier = event->policy_id ? TIER_NETWORK_POLICY : TIER_DEFAULT;
}

static __always_inline bool setting(__u32 slot)
{
	__u32 *value = settings.lookup(&slot);

	return value && *value;
}

static __always_inline void report(struct flow_event *event)
{
	if (setting(SETTING_EMIT_EVENTS) && policy_events.ringbuf_output(event, sizeof(*event), 0))
		ringbuf_lost.increment(LOST_POLICY_EVENTS);
	if (setting(SETTING_TAP_EVENTS) && tap_events.ringbuf_output(event, sizeof(*event), 0))
		ringbuf_lost.increment(LOST_TAP_EVENTS);
}

static __always_inline int handle(struct __sk_buff *skb, bool is_egress)
{
	__u32 ifindex = skb->ifindex;
	struct packet pkt = {};
	struct endpoint *ep;

	if (parse_packet(skb, &pkt) == PASS)
		return TC_ACT_OK;
	ep = endpoints.lookup(&ifindex);
	if (!ep && !setting(SETTING_STRICT))
		return TC_ACT_OK;
	pkt.flow.ifindex = ifindex;
	if (!pkt.bare_syn && is_known_flow(&pkt))
		return TC_ACT_OK;

	struct flow_event event = {
		.timestamp_ns = bpf_ktime_get_ns(),
		.src_port = pkt.flow.src_port,
		.dest_port = pkt.flow.dest_port,
		.protocol = pkt.flow.protocol,
		.is_egress = is_egress,
		.packet_size = skb->len,
		.ifindex = ifindex,
	};
	__builtin_memcpy(event.src_ip, pkt.flow.src_ip, 16);
	__builtin_memcpy(event.dest_ip, pkt.flow.dest_ip, 16);
	if (ep) {
		event.endpoint_id = ep->endpoint_id;
		judge(ep, &pkt, is_egress, &event);
	} else {
		/* Strict mode, a veth attached before its pod was programmed. */
		event.verdict = VERDICT_DENY;
		event.tier = TIER_DEFAULT;
	}
	if (event.verdict == VERDICT_ACCEPT)
		remember_flow(&pkt, &event);
	report(&event);
	return event.verdict == VERDICT_ACCEPT ? TC_ACT_OK : TC_ACT_SHOT;
}

int handle_ingress(struct __sk_buff *skb)
{
	return handle(skb, false);
}

int handle_egress(struct __sk_buff *skb)
{
	return handle(skb, true);
}
