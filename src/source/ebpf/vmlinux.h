/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Minimal vmlinux.h for connects.bpf.c: only the kernel types the program
 * touches, and in them only the fields it reads.
 *
 * Derived from `bpftool btf dump file /sys/kernel/btf/vmlinux format c`
 * (kernel 6.18, 2.8 MB), then reduced by hand: every other type and field
 * removed, unions and anonymous members flattened to the names the program
 * uses. Field offsets and sizes here are NOT the kernel's and need not be:
 * each struct carries `preserve_access_index`, so clang records every access
 * as a CO-RE relocation by type and field *name*, and libbpf/aya rewrite the
 * offsets against the running kernel's BTF (/sys/kernel/btf/vmlinux) at load
 * time. A field missing on the running kernel fails the load with a
 * relocation error instead of reading garbage.
 *
 * sock.sk_protocol was an 8-bit bitfield before 5.6 and is a u16 since; the
 * program reads it with BPF_CORE_READ_BITFIELD_PROBED, which handles both.
 */
#ifndef __SOCKSCOPE_VMLINUX_H__
#define __SOCKSCOPE_VMLINUX_H__

typedef unsigned char __u8;
typedef short int __s16;
typedef short unsigned int __u16;
typedef int __s32;
typedef unsigned int __u32;
typedef long long int __s64;
typedef long long unsigned int __u64;
typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
enum { false = 0, true = 1 };

enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
};

enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
	BPF_EXIST = 2,
};

#pragma clang attribute push (__attribute__((preserve_access_index)), apply_to = record)

struct ns_common {
	unsigned int inum;
};

struct net {
	struct ns_common ns;
};

typedef struct {
	struct net *net;
} possible_net_t;

struct in6_addr {
	union {
		__u8 u6_addr8[16];
		__be32 u6_addr32[4];
	} in6_u;
};

struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	volatile unsigned char skc_state;
	possible_net_t skc_net;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
};

typedef enum {
	SS_FREE = 0,
	SS_UNCONNECTED = 1,
	SS_CONNECTING = 2,
	SS_CONNECTED = 3,
	SS_DISCONNECTING = 4,
} socket_state;

struct socket {
	socket_state state;
};

struct sock {
	struct sock_common __sk_common;
	u16 sk_protocol;
	int sk_err;
	struct socket *sk_socket;
};

struct inet_sock {
	struct sock sk;
	__be16 inet_sport;
};

#pragma clang attribute pop

#endif /* __SOCKSCOPE_VMLINUX_H__ */
