/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Network policy for one pod, enforced on its host-side veth, compiled by bcc.
 *
 * handle_ingress sees traffic into the pod (the veth's tc egress hook),
 * handle_egress traffic out of it (the veth's tc ingress hook). The first
 * packet of a flow is judged against the pod's rules and reported in
 * policy_events; allowed flows enter conntrack, where their later packets and
 * replies are counted (one lookup, two atomic adds) and pass without a lookup
 * in the rules or an event. Denied packets are judged (and reported) every
 * time. A bare TCP SYN is always judged: it may open a new connection.
 *
 * A TCP flow ends when both sides have sent FIN, or at a RST: its flow_end,
 * with the counters, is reported at once and the entry stays, frozen, until
 * the agent removes it. Flows that go idle are ended by the agent, which
 * scans conntrack in batches (flowlog/dataplane/flows.py).
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

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

/* A packet as it travels. */
struct packet {
	__u8 src_ip[16]; /* IPv4 as ::ffff:a.b.c.d */
	__u8 dest_ip[16];
	__u16 src_port;  /* host byte order */
	__u16 dest_port;
	__u16 icmp_id;   /* ICMP echo identifier, part of the flow key only */
	__u8 protocol;
	__u8 tcp_flags;  /* TCP_* bits of the header */
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
	__u8 protocol = pkt->protocol;

	if (protocol == IPPROTO_TCP || protocol == IPPROTO_UDP || protocol == IPPROTO_SCTP) {
		struct l4_ports *ports = l4;

		if ((void *)(ports + 1) > data_end)
			return JUDGE;
		pkt->src_port = bpf_ntohs(ports->source);
		pkt->dest_port = bpf_ntohs(ports->dest);
		if (protocol == IPPROTO_TCP) {
			__u8 *flags = l4 + 13; /* after the ports, sequence and ack numbers, offset */

			if ((void *)(flags + 1) <= data_end)
				pkt->tcp_flags = *flags;
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
		map_ipv4(pkt->src_ip, ip->saddr);
		map_ipv4(pkt->dest_ip, ip->daddr);
		pkt->protocol = ip->protocol;
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
		__builtin_memcpy(pkt->src_ip, &ip6->saddr, 16);
		__builtin_memcpy(pkt->dest_ip, &ip6->daddr, 16);
		pkt->protocol = ip6->nexthdr;
		/* One hop-by-hop header (multicast listener reports carry it) is
		 * skipped; any other extension header is judged as protocol UNKNOWN. */
		if (pkt->protocol == IPPROTO_HOPOPTS) {
			struct ipv6_opt_hdr *hop = l4;

			if ((void *)(hop + 1) > data_end)
				return JUDGE;
			pkt->protocol = hop->nexthdr;
			l4 += (hop->hdrlen + 1) * 8;
		}
		return parse_l4(pkt, l4, data_end);
	}
	return PASS;
}

/* Whether (ip_a, port_a) sorts after (ip_b, port_b): any fixed order will do. */
static __always_inline bool sorts_after(const __u8 *ip_a, __u16 port_a, const __u8 *ip_b,
					__u16 port_b)
{
	const __u64 *a = (const __u64 *)ip_a, *b = (const __u64 *)ip_b;

	if (a[0] != b[0])
		return a[0] > b[0];
	if (a[1] != b[1])
		return a[1] > b[1];
	return port_a > port_b;
}

/* The conntrack key of the packet's flow; returns whether the packet's source
 * is the key's upper end. */
static __always_inline bool flow_key_of(const struct packet *pkt, __u32 ifindex,
					struct flow_key *key)
{
	__u16 src_port = pkt->icmp_id ? pkt->icmp_id : pkt->src_port;
	__u16 dest_port = pkt->icmp_id ? pkt->icmp_id : pkt->dest_port;
	bool src_is_upper = sorts_after(pkt->src_ip, src_port, pkt->dest_ip, dest_port);

	if (src_is_upper) {
		__builtin_memcpy(key->lower_ip, pkt->dest_ip, 16);
		__builtin_memcpy(key->upper_ip, pkt->src_ip, 16);
		key->lower_port = dest_port;
		key->upper_port = src_port;
	} else {
		__builtin_memcpy(key->lower_ip, pkt->src_ip, 16);
		__builtin_memcpy(key->upper_ip, pkt->dest_ip, 16);
		key->lower_port = src_port;
		key->upper_port = dest_port;
	}
	key->protocol = pkt->protocol;
	key->ifindex = ifindex;
	return src_is_upper;
}

static __always_inline bool setting(__u32 slot)
{
	__u32 *value = settings.lookup(&slot);

	return value && *value;
}

static __always_inline void report(void *event, __u64 size)
{
	if (setting(SETTING_EMIT_EVENTS) && policy_events.ringbuf_output(event, size, 0))
		ringbuf_lost.increment(LOST_POLICY_EVENTS);
	if (setting(SETTING_TAP_EVENTS) && tap_events.ringbuf_output(event, size, 0))
		ringbuf_lost.increment(LOST_TAP_EVENTS);
}

/* The flow_end of a conntrack entry: the flow as its first packet travelled. */
static __always_inline void report_flow_end(const struct flow_key *key,
					    const struct flow_state *state, __u64 now)
{
	bool source_is_upper = state->flags & FLOW_SOURCE_IS_UPPER;
	bool icmp = key->protocol == IPPROTO_ICMP || key->protocol == IPPROTO_ICMPV6;
	struct flow_end end = {
		.flow = {
			.timestamp_ns = now,
			.protocol = key->protocol,
			.verdict = VERDICT_EXPIRED,
			.is_egress = state->is_egress,
			.tier = state->tier,
			.ifindex = key->ifindex,
			.endpoint_id = state->endpoint_id,
			.policy_id = state->policy_id,
		},
		.start_ns = state->start_ns,
		.last_ns = state->last_ns,
		.packets_sent = state->packets[FLOW_SENT],
		.bytes_sent = state->bytes[FLOW_SENT],
		.packets_received = state->packets[FLOW_RECEIVED],
		.bytes_received = state->bytes[FLOW_RECEIVED],
	};

	__builtin_memcpy(end.flow.src_ip, source_is_upper ? key->upper_ip : key->lower_ip, 16);
	__builtin_memcpy(end.flow.dest_ip, source_is_upper ? key->lower_ip : key->upper_ip, 16);
	if (!icmp) {
		end.flow.src_port = source_is_upper ? key->upper_port : key->lower_port;
		end.flow.dest_port = source_is_upper ? key->lower_port : key->upper_port;
	}
	report(&end, sizeof(end));
}

/* FIN or RST on a known TCP flow: the flow ends when both sides have sent
 * FIN, or at the first RST. Whichever CPU marks it ended reports it, once. */
static __always_inline void follow_close(const struct flow_key *key, struct flow_state *state,
					 __u8 tcp_flags, int direction, __u64 now)
{
	__u64 mark = tcp_flags & TCP_RST ? FLOW_RESET
		     : direction == FLOW_SENT ? FLOW_FIN_SENT : FLOW_FIN_RECEIVED;
	__u64 flags = __sync_fetch_and_or(&state->flags, mark) | mark;
	bool closed = (flags & FLOW_RESET) ||
		      (flags & (FLOW_FIN_SENT | FLOW_FIN_RECEIVED)) ==
			      (FLOW_FIN_SENT | FLOW_FIN_RECEIVED);

	if (!closed || (flags & FLOW_ENDED))
		return;
	if (__sync_fetch_and_or(&state->flags, FLOW_ENDED) & FLOW_ENDED)
		return;
	report_flow_end(key, state, now);
}

/* A packet of a flow conntrack knows: counted, and followed to its close. */
static __always_inline void count_packet(const struct flow_key *key, struct flow_state *state,
					 const struct packet *pkt, bool src_is_upper,
					 __u32 bytes, __u64 now)
{
	int direction = src_is_upper == !!(state->flags & FLOW_SOURCE_IS_UPPER) ? FLOW_SENT
										  : FLOW_RECEIVED;

	if (state->flags & FLOW_ENDED)
		return; /* reported already: the stragglers of a close */
	__sync_fetch_and_add(&state->packets[direction], 1);
	__sync_fetch_and_add(&state->bytes[direction], bytes);
	state->last_ns = now;
	if (pkt->protocol == IPPROTO_TCP && (pkt->tcp_flags & (TCP_FIN | TCP_RST)))
		follow_close(key, state, pkt->tcp_flags, direction, now);
}

/* A new flow allowed by ``event``: its conntrack entry, counting its first packet. */
static __always_inline void start_flow(const struct flow_key *key, bool src_is_upper,
				       const struct flow_event *event, __u32 bytes, __u64 now)
{
	struct flow_state state = {
		.start_ns = now,
		.last_ns = now,
		.flags = src_is_upper ? FLOW_SOURCE_IS_UPPER : 0,
		.policy_id = event->policy_id,
		.endpoint_id = event->endpoint_id,
		.is_egress = event->is_egress,
		.tier = event->tier,
	};

	state.packets[FLOW_SENT] = 1;
	state.bytes[FLOW_SENT] = bytes;
	conntrack.update(key, &state);
}

/* Whether a bare SYN is more of the flow conntrack holds for it (a
 * retransmission), rather than a new connection on the same addresses. */
static __always_inline bool continues_flow(const struct flow_state *state, bool src_is_upper,
					   const struct flow_event *event)
{
	return !(state->flags & FLOW_ENDED) &&
	       src_is_upper == !!(state->flags & FLOW_SOURCE_IS_UPPER) &&
	       state->policy_id == event->policy_id && state->is_egress == event->is_egress;
}

/* The first port entry allowing this packet to or from `remote`, or NULL. */
static __always_inline struct port_rule *find_port_rule(const struct endpoint *ep,
							 const struct packet *pkt,
							 const __u8 *remote, bool is_egress)
{
	struct rule_key key = {.prefixlen = 32 + 128, .rules_id = ep->rules_id};
	struct rule_value *rules;
	__u16 port = pkt->dest_port;

	__builtin_memcpy(key.ip, remote, 16);
	rules = is_egress ? egress_rules.lookup(&key) : ingress_rules.lookup(&key);
	if (!rules)
		return NULL;
	for (int i = 0; i < MAX_PORT_RULES; i++) {
		struct port_rule *rule = &rules->ports[i];

		if (i >= rules->count)
			break;
		if (rule->protocol && rule->protocol != pkt->protocol)
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
	const __u8 *remote = is_egress ? pkt->dest_ip : pkt->src_ip;
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

static __always_inline int handle(struct __sk_buff *skb, bool is_egress)
{
	__u32 ifindex = skb->ifindex;
	__u32 bytes = skb->len > ETH_HLEN ? skb->len - ETH_HLEN : 0; /* L3 */
	struct packet pkt = {};
	struct flow_key key = {};
	struct flow_state *state;
	struct endpoint *ep;
	bool src_is_upper, bare_syn;
	__u64 now;

	if (parse_packet(skb, &pkt) == PASS)
		return TC_ACT_OK;
	ep = endpoints.lookup(&ifindex);
	if (!ep && !setting(SETTING_STRICT))
		return TC_ACT_OK;
	src_is_upper = flow_key_of(&pkt, ifindex, &key);
	bare_syn = pkt.protocol == IPPROTO_TCP && (pkt.tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN;
	state = conntrack.lookup(&key);
	now = bpf_ktime_get_ns();
	if (state && !bare_syn) {
		count_packet(&key, state, &pkt, src_is_upper, bytes, now);
		return TC_ACT_OK;
	}

	struct flow_event event = {
		.timestamp_ns = now,
		.src_port = pkt.src_port,
		.dest_port = pkt.dest_port,
		.protocol = pkt.protocol,
		.is_egress = is_egress,
		.packet_size = skb->len,
		.ifindex = ifindex,
	};
	__builtin_memcpy(event.src_ip, pkt.src_ip, 16);
	__builtin_memcpy(event.dest_ip, pkt.dest_ip, 16);
	if (ep) {
		event.endpoint_id = ep->endpoint_id;
		judge(ep, &pkt, is_egress, &event);
	} else {
		/* Strict mode, a veth attached before its pod was programmed. */
		event.verdict = VERDICT_DENY;
		event.tier = TIER_DEFAULT;
	}
	if (event.verdict != VERDICT_ACCEPT) {
		report(&event, sizeof(event));
		return TC_ACT_SHOT;
	}
	if (state && continues_flow(state, src_is_upper, &event)) {
		count_packet(&key, state, &pkt, src_is_upper, bytes, now);
		return TC_ACT_OK;
	}
	if (state && !(state->flags & FLOW_ENDED)) {
		/* A new connection replaces one that never closed: that one ends here. */
		if (!(__sync_fetch_and_or(&state->flags, FLOW_ENDED) & FLOW_ENDED))
			report_flow_end(&key, state, now);
	}
	start_flow(&key, src_is_upper, &event, bytes, now);
	report(&event, sizeof(event));
	return TC_ACT_OK;
}

int handle_ingress(struct __sk_buff *skb)
{
	return handle(skb, false);
}

int handle_egress(struct __sk_buff *skb)
{
	return handle(skb, true);
}
