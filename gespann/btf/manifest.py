"""Exactly which kernel types the probes use: the only offsets gespann ever resolves.

Keeping the list here, in one place, is what makes the vendored tables small and
the disk cache exact: both hold this manifest resolved for one kernel, and its
digest is part of the cache key. A probe that needs another field adds it here,
then regenerates the tables (tools/vmlinux_tables.py).

`required` entries must exist on every kernel gespann supports; resolving a
kernel without one is an error. Optional entries are recorded as absent.
Functions, tracepoints and enums are resolved only from kernel BTF and never
kept in vendored tables, so adding one needs no table regeneration.
"""

from __future__ import annotations

import json
import zlib
from typing import NamedTuple


class FieldRef(NamedTuple):
    """One member path of one struct, as probes read it (a direct load or bpf_probe_read_kernel)."""

    struct: str
    path: str
    required: bool = True

    @property
    def key(self) -> str:
        return f"{self.struct}.{self.path}"


class AttachRef(NamedTuple):
    """A kernel function (for fentry/fexit) or a tracepoint (for tp_btf) probes may attach to."""

    name: str
    required: bool = False


class EnumRef(NamedTuple):
    """A kernel enum whose enumerator names probes report (value -> name, from the running kernel's BTF)."""

    name: str
    required: bool = False


def _optional(struct: str, path: str) -> FieldRef:
    return FieldRef(struct, path, required=False)


FIELDS: tuple[FieldRef, ...] = (
    # The connection tuple and state (struct sock_common, first member of every socket).
    FieldRef("sock_common", "skc_family"),
    FieldRef("sock_common", "skc_state"),
    FieldRef("sock_common", "skc_num"),  # local port, host order
    FieldRef("sock_common", "skc_dport"),  # remote port, network order
    FieldRef("sock_common", "skc_daddr"),
    FieldRef("sock_common", "skc_rcv_saddr"),
    _optional("sock_common", "skc_v6_daddr"),  # only with CONFIG_IPV6
    _optional("sock_common", "skc_v6_rcv_saddr"),
    # struct sock: protocol and the error behind a failed connect. sk_protocol and
    # sk_type were bitfields before 5.6; the resolver reports their bits.
    FieldRef("sock", "sk_protocol"),
    FieldRef("sock", "sk_type"),
    FieldRef("sock", "sk_err"),
    # What the kernel sets sk_err from, for a failed connect whose sk_err the application took first: the soft
    # error a timeout reports, and whether the retransmission timer's handler is running (icsk_pending 0).
    FieldRef("sock", "sk_err_soft"),
    FieldRef("inet_connection_sock", "icsk_pending"),
    FieldRef("sock_common", "skc_flags"),  # sk_flags; SOCK_DONE: the peer's FIN has arrived
    # sk_cookie: the cookie sock_diag reports, once asked for: adoption at start
    FieldRef("sock_common", "skc_cookie.counter"),
    _optional("sock", "sk_cgrp_data"),  # only with CONFIG_SOCK_CGROUP_DATA
    FieldRef("inet_sock", "inet_sport"),
    # struct tcp_sock: byte, segment and RTT counters.
    FieldRef("tcp_sock", "bytes_acked"),
    FieldRef("tcp_sock", "bytes_received"),
    FieldRef("tcp_sock", "srtt_us"),  # smoothed RTT << 3
    FieldRef("tcp_sock", "total_retrans"),
    FieldRef("tcp_sock", "segs_in"),
    FieldRef("tcp_sock", "segs_out"),
    FieldRef("tcp_sock", "data_segs_in"),
    FieldRef("tcp_sock", "data_segs_out"),
    _optional("tcp_sock", "bytes_sent"),  # 4.19+: payload transmitted, retransmissions included
    _optional("tcp_sock", "bytes_retrans"),  # 4.19+: payload retransmitted
    FieldRef("tcp_sock", "delivered"),
    # When payload last went each way (jiffies), as tcp_info's last_data_sent / last_data_recv: the kernel
    # walk's idle count.
    _optional("tcp_sock", "lsndtime"),
    _optional("inet_connection_sock", "icsk_ack.lrcvtime"),
    # The minimum RTT as tcp_min_rtt() reads it: rtt_min is a windowed min-filter
    # (struct minmax) whose first sample's value is the current minimum.
    FieldRef("tcp_sock", "rtt_min.s[0].v"),
    # The socket's network namespace, for scoping probes to one namespace:
    # sk->__sk_common.skc_net.net->ns.inum is the inode of /proc/PID/ns/net.
    FieldRef("sock_common", "skc_net.net"),
    FieldRef("net", "ns.inum"),
    # UDP flows, from the packet at the device (udp_send, udp_receive): the sending socket or the
    # receiving device's namespace, the headers, and the GSO/GRO segment count.
    FieldRef("sk_buff", "sk"),
    FieldRef("sk_buff", "dev"),
    FieldRef("sk_buff", "head"),
    FieldRef("sk_buff", "data"),
    FieldRef("sk_buff", "end"),  # skb_shinfo() is at head + end (an offset on 64-bit kernels)
    FieldRef("sk_buff", "network_header"),
    FieldRef("sk_buff", "protocol"),
    FieldRef("sk_buff", "pkt_type"),  # a 3-bit bitfield
    FieldRef("skb_shared_info", "gso_size"),
    FieldRef("skb_shared_info", "gso_segs"),
    FieldRef("net_device", "nd_net.net"),
    FieldRef("task_struct", "flags"),  # PF_KTHREAD: who sent is noted only for user tasks
    FieldRef("task_struct", "stack"),  # is an event on the task's stack, or an interrupt's?
    FieldRef("pt_regs", "sp"),  # a perf tracepoint's frame, from the pt_regs perf fills in
)

def _optional_attach(*names: str) -> tuple[AttachRef, ...]:
    return tuple(AttachRef(name) for name in names)


#: fentry/fexit targets (FUNC ids), used where the kernel has BPF trampolines.
FUNCS = _optional_attach(
    "tcp_connect", "tcp_close", "tcp_set_state", "tcp_sendmsg", "tcp_cleanup_rbuf", "udp_sendmsg", "udp_recvmsg",
    # The two functions that fire sock:inet_sock_set_state: every socket state change passes one.
    "inet_sk_state_store", "inet_sk_set_state",
    "__icmp_send",  # tcp_icmp_errors where icmp:icmp_send is missing (before 6.11)
    # The target of gespann.bpf.features' fentry probe: a function that exists for testing.
    "bpf_fentry_test1",
    # Iterators (BPF_TRACE_ITER) attach by the id of their bpf_iter_<target> FUNC: the kernel walk of
    # open TCP sockets, and the walk of the UDP flow map.
    "bpf_iter_tcp", "bpf_iter_bpf_map_elem",
)

#: tp_btf targets (btf_trace_<name> typedef ids).
TRACEPOINTS = _optional_attach(
    "inet_sock_set_state", "inet_sk_error_report", "tcp_retransmit_skb", "tcp_send_reset",
    "tcp_receive_reset", "tcp_destroy_sock", "tcp_probe", "net_dev_queue", "netif_receive_skb", "kfree_skb",
    "icmp_send",
    # The target of gespann.bpf.features' tp_btf probes: a tracepoint that only BPF_PROG_TEST_RUN fires.
    "bpf_test_finish",
)

#: Enums named from kernel BTF, never from a table in the code: a new kernel's new values show up by
#: name without a release of gespann. Vendored tables do not carry them.
ENUMS: tuple[EnumRef, ...] = (
    EnumRef("skb_drop_reason"),  # 5.17+: why skb:kfree_skb dropped a packet
)


def digest() -> str:
    """A short hash of the manifest: resolutions of another manifest are never reused."""
    content = [[tuple(ref) for ref in group] for group in (FIELDS, FUNCS, TRACEPOINTS, ENUMS)]
    return f"{zlib.crc32(json.dumps(content).encode()):08x}"
