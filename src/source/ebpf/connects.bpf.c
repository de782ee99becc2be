// SPDX-License-Identifier: GPL-2.0
/*
 * sockscope: connect outcomes and TIME_WAIT entries, counted in the kernel.
 *
 * Attached as tp_btf/inet_sock_set_state (the BTF-typed raw tracepoint
 * behind sock:inet_sock_set_state, fired by tcp_set_state() and
 * inet_sk_state_store()): needs no tracefs. Every event is classified
 * here and added to one row of the `flows` hash map; user space reads the
 * map when it polls. Nothing is sent per event.
 *
 * Outcome codes (struct flow_key.outcome):
 *   < 0x1000  the errno of a failed connect (sk_err, or 99 EADDRNOTAVAIL)
 *   0x1000    OUTCOME_ESTABLISHED
 *   0x1001    OUTCOME_ABORTED
 *   0x1002    OUTCOME_TIME_WAIT
 *   0x1003    OUTCOME_EADDRNOTAVAIL_BOUND
 * See classify() for the kernel paths behind each.
 *
 * Build: clang -target bpf -O2 -g -D__TARGET_ARCH_x86 (build.rs).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define EEXIST 17
#define EADDRNOTAVAIL 99

/* include/net/tcp_states.h */
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_FIN_WAIT2 5
#define TCP_CLOSE 7
#define TCP_CLOSING 11

#define OUTCOME_ESTABLISHED 0x1000
#define OUTCOME_ABORTED 0x1001
#define OUTCOME_TIME_WAIT 0x1002
#define OUTCOME_EADDRNOTAVAIL_BOUND 0x1003

#define STAT_EVENTS 0
#define STAT_LOST 1
#define STAT_SLOTS 2

/* 44 bytes, no implicit padding; integers in host byte order. Mirrored by
 * src/source/ebpf/decode.rs. */
struct flow_key {
	__u32 netns;    /* sock_net(sk)->ns.inum */
	__u16 family;   /* AF_INET or AF_INET6 */
	__u16 dport;    /* destination port, host order */
	__u8 saddr[16]; /* local address; IPv4 in the first 4 bytes */
	__u8 daddr[16]; /* destination address; IPv4 in the first 4 bytes */
	__u16 outcome;  /* errno (< 0x1000) or OUTCOME_* */
	__u16 pad;      /* zero */
};

/* max_entries is replaced at load time (LoadOptions::max_entries). A plain
 * hash, not LRU: an LRU map would evict rows silently and make cumulative
 * counters go backwards. A full map counts in STAT_LOST instead. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct flow_key);
	__type(value, __u64);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

/* 0: every network namespace; else only this ns inode number. Set before
 * load (aya EbpfLoader::override_global). */
const volatile __u32 netns_filter = 0;

static __always_inline void stat_add(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &slot);

	if (v)
		__sync_fetch_and_add(v, 1);
}

/*
 * The outcome of one transition, or 0 to ignore it. Paths (net/ipv4):
 *
 * SYN_SENT -> ESTABLISHED: tcp_finish_connect() (SYN-ACK received).
 * SYN_SENT -> CLOSE, sk_err != 0: an asynchronous failure; tcp_reset()
 *   (RST: ECONNREFUSED), tcp_write_err() (SYN retries exhausted:
 *   ETIMEDOUT, or the soft ICMP error), tcp_v4_err()/tcp_v6_err() (hard
 *   ICMP: EHOSTUNREACH, ENETUNREACH, ...). The errno is the outcome.
 * SYN_SENT -> CLOSE, sk_err == 0, inet_sport == 0: inet_hash_connect()
 *   found no free port inside tcp_v4_connect()/tcp_v6_connect() (their
 *   `failure:` label sets CLOSE); connect() returns EADDRNOTAVAIL.
 * SYN_SENT -> CLOSE, sk_err == 0, inet_sport != 0:
 *   - sk->sk_socket->state == SS_CONNECTING: __inet_stream_connect() sets
 *     it only after tcp_v4_connect() returned 0, so the SYN went out and
 *     the application gave up: close() (__tcp_close()) or connect(AF_UNSPEC)
 *     (tcp_disconnect()) -> OUTCOME_ABORTED.
 *   - otherwise connect() failed synchronously with the port already set:
 *     an explicit bind() whose 4-tuple toward this destination is taken
 *     (__inet_hash_connect() -> -EADDRNOTAVAIL), or, rarely and not
 *     distinguishable here, ip_route_newports()/tcp_connect() failing
 *     -> OUTCOME_EADDRNOTAVAIL_BOUND.
 * FIN_WAIT2/CLOSING -> CLOSE, sk_err == 0: tcp_time_wait() replaced the
 *   socket with a timewait socket, then tcp_done() -> OUTCOME_TIME_WAIT.
 *   Over-counts: tcp_max_tw_buckets overflow (no timewait socket made,
 *   TcpExt TCPTimeWaitOverflow), an orphaned FIN_WAIT2 whose timewait socket
 *   (substate FIN_WAIT2) expires without the peer's FIN, tcp_keepalive_timer()
 *   resetting an orphaned FIN_WAIT2, and TCP_LINGER2 < 0 in __tcp_close().
 *   A FIN_WAIT2 timewait socket that then gets the peer's FIN becomes
 *   TIME_WAIT without an event of its own: it was counted here.
 */
static __always_inline __u16 classify(const struct sock *sk, int oldstate,
				      int newstate)
{
	int err;

	if (newstate == TCP_ESTABLISHED)
		return oldstate == TCP_SYN_SENT ? OUTCOME_ESTABLISHED : 0;
	if (newstate != TCP_CLOSE)
		return 0;

	err = BPF_CORE_READ(sk, sk_err);
	if (oldstate == TCP_FIN_WAIT2 || oldstate == TCP_CLOSING)
		return err == 0 ? OUTCOME_TIME_WAIT : 0;
	if (oldstate != TCP_SYN_SENT)
		return 0;
	if (err > 0 && err < 0x1000)
		return err;
	if (err != 0)
		return 0;
	if (BPF_CORE_READ((const struct inet_sock *)sk, inet_sport) == 0)
		return EADDRNOTAVAIL;

	struct socket *sock = BPF_CORE_READ(sk, sk_socket);
	if (sock && BPF_CORE_READ(sock, state) == SS_CONNECTING)
		return OUTCOME_ABORTED;
	return OUTCOME_EADDRNOTAVAIL_BOUND;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(inet_sock_set_state, const struct sock *sk, int oldstate,
	     int newstate)
{
	struct flow_key key = {};
	__u64 one = 1, *count;
	__u16 outcome;
	long ret;

	/* Cheap filter first: only the transitions classify() names. */
	if (newstate != TCP_ESTABLISHED && newstate != TCP_CLOSE)
		return 0;
	if (oldstate != TCP_SYN_SENT && oldstate != TCP_FIN_WAIT2 &&
	    oldstate != TCP_CLOSING)
		return 0;
	if (BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	key.family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (key.family != AF_INET && key.family != AF_INET6)
		return 0;
	key.netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	if (netns_filter && key.netns != netns_filter)
		return 0;

	outcome = classify(sk, oldstate, newstate);
	if (!outcome)
		return 0;
	key.outcome = outcome;
	key.dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (key.family == AF_INET) {
		bpf_core_read(key.saddr, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_core_read(key.daddr, 4, &sk->__sk_common.skc_daddr);
	} else {
		bpf_core_read(key.saddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(key.daddr, 16, &sk->__sk_common.skc_v6_daddr);
	}

	count = bpf_map_lookup_elem(&flows, &key);
	if (!count) {
		ret = bpf_map_update_elem(&flows, &key, &one, BPF_NOEXIST);
		if (ret == 0) {
			stat_add(STAT_EVENTS);
			return 0;
		}
		/* -EEXIST: another CPU inserted the row first; add to it. */
		count = ret == -EEXIST ? bpf_map_lookup_elem(&flows, &key) : 0;
		if (!count) {
			stat_add(STAT_LOST); /* the map is full */
			return 0;
		}
	}
	__sync_fetch_and_add(count, 1);
	stat_add(STAT_EVENTS);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
