"""Exactly which kernel types the probes use: the only offsets gespann ever resolves.

Keeping the list here, in one place, is what makes the vendored tables small and
the disk cache exact: both hold this manifest resolved for one kernel, and its
digest is part of the cache key. A probe that needs another field adds it here,
then regenerates the tables (tools/vmlinux_tables.py).

`required` entries must exist on every kernel gespann supports; resolving a
kernel without one is an error. Optional entries are recorded as absent.
Functions, tracepoints and enums are resolved only from kernel BTF and never
kept in vendored tables, so adding one needs no table regeneration.

A probe from outside the tree cannot edit this list: it declares what it needs
beyond it (`KernelNeeds`, `Probe(kernel=...)`), and those entries are resolved
from the kernel's BTF with the manifest, always as optional: one the kernel
lacks refuses that probe, not gespann. Vendored tables carry the manifest only.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass
from typing import Iterable, NamedTuple, Union


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
    # sk_cookie: the cookie sock_diag reports, once asked for: adoption at start.
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
    # UDP flows, from the packet at the device (the UDP probes): the sending socket or the
    # receiving device's namespace, the headers, and the GSO/GRO segment count.
    FieldRef("sk_buff", "sk"),
    FieldRef("sk_buff", "dev"),
    FieldRef("sk_buff", "head"),
    FieldRef("sk_buff", "data"),
    FieldRef("sk_buff", "end"),  # skb_shinfo() is at head + end (an offset on 64-bit kernels)
    FieldRef("sk_buff", "network_header"),
    _optional("sk_buff", "transport_header"),  # where a received packet's TCP or UDP header starts
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
    "__icmp_send",  # ICMP errors this host sends, where icmp:icmp_send is missing (before 6.11)
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


#: A member path as fieldpath.py reads it: names joined by dots, each with optional [index]es.
_FIELD_PATH = re.compile(r"[A-Za-z_]\w*(\[\d+\])*(\.[A-Za-z_]\w*(\[\d+\])*)*")
_NAME = re.compile(r"[A-Za-z_]\w*")


@dataclass(frozen=True)
class KernelNeeds:
    """What one probe reads from or attaches to in the kernel beyond this manifest, declared in its own file:

        Probe(..., kernel=KernelNeeds(fields=("sock.sk_mark",), tracepoints=("tcp_retransmit_synack",)))

    fields are FieldRefs or "struct.path" strings; functions are fentry targets, tracepoints tp_btf targets,
    enums enum names. They are resolved from the running kernel's BTF with the manifest, and read through
    the build target's kernel types as the manifest's are. Entries the manifest already lists cost nothing.
    """

    fields: tuple[Union[FieldRef, str], ...] = ()
    functions: tuple[str, ...] = ()
    tracepoints: tuple[str, ...] = ()
    enums: tuple[str, ...] = ()

    def __post_init__(self):
        for group in ("fields", "functions", "tracepoints", "enums"):
            entries = getattr(self, group)
            if isinstance(entries, str) or not isinstance(entries, Iterable):
                raise TypeError(f"KernelNeeds({group}=...) takes a tuple of names, not {entries!r}")
            object.__setattr__(self, group, tuple(_field_ref(e) if group == "fields" else _name(group, e)
                                                  for e in entries))

    def __bool__(self) -> bool:
        return bool(self.fields or self.functions or self.tracepoints or self.enums)

    def names(self, kind: str) -> tuple[str, ...]:
        """The entries of one kind ("field", "function", "tracepoint", "enum") as kernel types key them."""
        if kind == "field":
            return tuple(ref.key for ref in self.fields)
        return getattr(self, KINDS[kind])


#: Kinds of kernel names, as error messages say them, and the KernelNeeds argument that declares each.
KINDS = {"field": "fields", "function": "functions", "tracepoint": "tracepoints", "enum": "enums"}

#: Nothing beyond the manifest: gespann's own probes.
NO_NEEDS = KernelNeeds()


def _field_ref(entry) -> FieldRef:
    if isinstance(entry, FieldRef):
        struct, path = entry.struct, entry.path
    elif isinstance(entry, str):
        struct, _, path = entry.partition(".")
    else:
        raise TypeError(f"KernelNeeds(fields=...): {entry!r} is neither a FieldRef nor a 'struct.path' string")
    if not _NAME.fullmatch(struct) or not _FIELD_PATH.fullmatch(path):
        raise ValueError(f"KernelNeeds(fields=...): {entry!r} is not STRUCT.MEMBER[.MEMBER...] (members may "
                         "have [index]es, e.g. 'tcp_sock.rtt_min.s[0].v')")
    return FieldRef(struct, path, required=False)


def _name(group: str, entry) -> str:
    if not isinstance(entry, str) or not _NAME.fullmatch(entry):
        raise ValueError(f"KernelNeeds({group}=...): {entry!r} is not a kernel name")
    return entry


def beyond_manifest(needs: Iterable[KernelNeeds]) -> KernelNeeds:
    """Everything `needs` ask for that the manifest does not list, each once, sorted: all that resolving
    them adds to resolving the manifest (nothing, for gespann's own probes)."""
    needs = tuple(needs)
    extra = {kind: sorted({name for need in needs for name in need.names(kind)} - listed(kind)) for kind in KINDS}
    return KernelNeeds(**{KINDS[kind]: tuple(names) for kind, names in extra.items()})


def listed(kind: str) -> set[str]:
    """The names of one kind ("field", "function", "tracepoint", "enum") the manifest lists."""
    refs = {"field": FIELDS, "function": FUNCS, "tracepoint": TRACEPOINTS, "enum": ENUMS}[kind]
    return {ref.key if kind == "field" else ref.name for ref in refs}


def digest(extra: KernelNeeds = NO_NEEDS) -> str:
    """A short hash of the manifest and the probes' needs beyond it: resolutions of another set are never
    reused. Without needs it is the manifest's alone, as it always was."""
    content = [[tuple(ref) for ref in group] for group in (FIELDS, FUNCS, TRACEPOINTS, ENUMS)]
    if extra:
        content.append([list(extra.names(kind)) for kind in KINDS])
    return f"{zlib.crc32(json.dumps(content).encode()):08x}"
