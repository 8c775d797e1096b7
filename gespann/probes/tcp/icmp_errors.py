"""ICMP errors this host sends about a TCP segment, kept by the segment's addresses and ports for tcp_lifecycle.

Why. A connect that an ICMP error ends gets its errno in sk->sk_err a moment
before the socket enters CLOSE, and an application that reads SO_ERROR in that
moment takes it: tcp_lifecycle then finds nothing to tell why the open failed.
Only the ICMP itself still says: neighbours that never answer (ARP or neighbour
discovery failed: the kernel sends itself "host unreachable"), and routers,
firewalls or namespaces on this host that reject the SYN. So each ICMP error
about a TCP segment is kept here, keyed by the segment's (source, destination,
source port, destination port), with the errno tcp_v4_err() turns it into and
when it was sent; a failed open that finds no sk_err looks its own tuple up
(tcp_lifecycle._emit_failure_errno), if the ICMP was sent after its SYN.

Where. icmp:icmp_send (6.11+) fires once the ICMP passed rate limiting, just
before it goes out. Where it is missing, __icmp_send() itself (fentry, kprobe)
also sees ICMPs that rate limiting then stops: a connect whose error was never
sent ends by a timeout (counted so) or by the application (then counted under
that ICMP's reason). IPv4 only: ICMPv6 has no such tracepoint (a failed
neighbour discovery whose EHOSTUNREACH the application read first counts as
`aborted`).

Cost. The program runs once per ICMP error the host sends, never per
connection: about 0.8 to 1 µs a run on the development machine (6.18, 2,000
errors, kernel.bpf_stats_enabled).

Limits. An ICMP error from a router on another machine is not seen: a connect
it ends, whose sk_err the application took first, counts as `aborted`.
"""

from __future__ import annotations

import errno

from asm import DW, R0, R1, R7, R8, R9, R10, B, Program, Record, W, u32, u64

from ...bpf.maps import LruHashMap
from ...bpf.syscall import UpdateFlags
from ..toolkit.arguments import Arg, Arguments
from ..toolkit.flavours import BtfTracepoint, Fentry, Kprobe, RawTracepoint, Tracepoint
from ..toolkit.kernel_memory import emit_read_bytes, emit_read_field
from ..toolkit.map_calls import emit_map_update
from ..toolkit.probe import BuildTarget, CheckContext, CheckLine, Probe
from ..toolkit.record_codec import RecordCodec

MAP_NAME = "tcp_icmp_errors"
#: ICMP errors kept at once: the newest, for the connects failing now.
CAPACITY = 4096
#: The TCP segment an ICMP error is about, as its headers carry it (network byte order).
KEY = Record("icmp_error_key", [("saddr", u32), ("daddr", u32), ("ports", u32)])
VALUE = Record("icmp_error", [("sent_ns", u64), ("errno", u32), ("unused", u32)])

ICMP_DEST_UNREACH, ICMP_TIME_EXCEEDED, ICMP_PARAMETERPROB = 3, 11, 12
#: icmp_err_convert[] (net/ipv4/icmp.c): a destination-unreachable code's errno. Code 4 (fragmentation
#: needed) is PMTU discovery, never an error of the connection.
UNREACHABLE_ERRNOS = {0: errno.ENETUNREACH, 1: errno.EHOSTUNREACH, 2: errno.ENOPROTOOPT, 3: errno.ECONNREFUSED,
                      5: errno.EOPNOTSUPP, 6: errno.ENETUNREACH, 7: errno.EHOSTDOWN, 8: errno.ENONET,
                      9: errno.ENETUNREACH, 10: errno.EHOSTUNREACH, 11: errno.ENETUNREACH, 12: errno.EHOSTUNREACH,
                      13: errno.EHOSTUNREACH, 14: errno.EHOSTUNREACH, 15: errno.EHOSTUNREACH}
IPPROTO_TCP, IPV4_HEADER = 6, 20

#: TP_PROTO(const struct sk_buff *skb, int type, int code); __icmp_send(skb_in, type, code, info, opt).
ARGS = ("skb", Arg.c_int("type"), Arg.c_int("code"))
FLAVOURS = (
    BtfTracepoint("icmp_send", args=ARGS),
    RawTracepoint("icmp_send", args=ARGS),
    Tracepoint("icmp", "icmp_send", fields={"skb": "skbaddr", "type": "type", "code": "code"}),
    Fentry(("__icmp_send",), args=ARGS),
    Kprobe(("__icmp_send",), args=ARGS),
)


def errors_map(capacity: int = CAPACITY) -> LruHashMap:
    return LruHashMap(RecordCodec(KEY), RecordCodec(VALUE), capacity, name="gsp_tcp_icmp_err")


def body(p: Program, args: Arguments, target: BuildTarget) -> None:
    types = target.kernel_types
    scratch = p.frame.alloc("read scratch", size=8)
    header = p.frame.alloc("ip header", size=IPV4_HEADER)
    key, value = p.frame.alloc("key", KEY), p.frame.alloc("value", VALUE)
    out, known = p.new_label("out"), p.new_label("errno known")
    args.load(p, R8, "type")
    args.load(p, R9, "code")
    args.load(p, R7, "skb")
    p.jeq(R7, 0, out)
    _emit_errno(p, known, out)
    p.label(known)
    p.stx(W, R10, value.at("errno"), R1)
    # The segment's headers: IPv4 at head + network_header, TCP right after its options.
    emit_read_field(p, R8, R7, types.field("sk_buff.head"), scratch)
    emit_read_field(p, R1, R7, types.field("sk_buff.network_header"), scratch)
    p.add(R8, R1)
    emit_read_bytes(p, R8, 0, IPV4_HEADER, header.at())
    p.ldx(B, R1, R10, header.at() + 9)  # protocol
    p.jne(R1, IPPROTO_TCP, out)
    p.ldx(B, R9, R10, header.at())  # version and header length
    p.mov(R1, R9)
    p.rsh(R1, 4)
    p.jne(R1, 4, out)
    p.and_(R9, 0xF)
    p.lsh(R9, 2)
    p.add(R8, R9)
    emit_read_bytes(p, R8, 0, 4, key.at("ports"))
    p.ldx(W, R1, R10, header.at() + 12)
    p.stx(W, R10, key.at("saddr"), R1)
    p.ldx(W, R1, R10, header.at() + 16)
    p.stx(W, R10, key.at("daddr"), R1)
    p.call("ktime_get_ns")
    p.stx(DW, R10, value.at("sent_ns"), R0)
    p.st(W, R10, value.at("unused"), 0)
    emit_map_update(p, MAP_NAME, key, value, UpdateFlags.ANY)
    p.label(out)
    p.mov(R0, 0)
    p.exit()


def _emit_errno(p: Program, known: str, out: str) -> None:
    """R1 = the errno of the ICMP error (type R8, code R9), and a jump to `known`; or to `out` for none."""
    unreachable = p.new_label("unreachable")
    p.mov(R1, errno.EHOSTUNREACH)
    p.jeq32(R8, ICMP_TIME_EXCEEDED, known)
    p.mov(R1, errno.EPROTO)
    p.jeq32(R8, ICMP_PARAMETERPROB, known)
    p.jeq32(R8, ICMP_DEST_UNREACH, unreachable)
    p.ja(out)
    p.label(unreachable)
    for code, number in UNREACHABLE_ERRNOS.items():
        p.mov(R1, number)
        p.jeq32(R9, code, known)
    p.ja(out)


NAME = "tcp_icmp_errors"
#: Where a failed connect's reason comes from, whatever the application reads.
EXACT = "refused and timeouts exact whatever the application reads"


def _check(context: CheckContext) -> str:
    """Where a failed connect's reason comes from when the application took sk_err first, and what is left."""
    trial = next((trial for trial in context.trials if trial.probe == NAME), None)
    if trial is None or not trial.flavour:
        return f"{EXACT}; any ICMP error the application reads first counts as aborted ({NAME} cannot attach)"
    return (f"{EXACT}, and ICMP errors this host sends ({NAME}: {trial.flavour}); an ICMP error from another "
            "machine that the application reads first counts as aborted")


PROBE = Probe(
    name=NAME,
    summary="ICMP errors sent about TCP segments, kept for failed connects whose error the application took",
    flavours=FLAVOURS,
    body=body,
    shared_maps={MAP_NAME: errors_map},
    checks=(CheckLine("failure_reasons", "failed reasons", _check,
                      when_left_out=f"{EXACT}; any ICMP error the application reads first counts as aborted"),),
    required=False,
)
