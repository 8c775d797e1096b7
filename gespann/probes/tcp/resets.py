"""Who reset a TCP connection: the reset tracepoints mark the connection before it ends.

tcp:tcp_receive_reset fires in tcp_reset(), before the socket enters CLOSE;
tcp:tcp_send_reset fires when an RST goes out for a socket. Both carry the
socket first (`sk`, `skaddr` in the record) on every kernel gespann supports;
tcp_send_reset gained a reason in 6.10, and its socket is NULL for an RST no
socket owns. Only a connection tcp_lifecycle is following (by address, or
adopted at start by cookie) is marked, and only with the first reset seen;
tcp_lifecycle counts the reset when the connection ends, so a connection is
never counted twice, and a reset sent after the state change
(tcp_send_active_reset() after tcp_disconnect() on 6.10+) finds no entry
left to mark. See tcp_lifecycle for resets no tracepoint reports.
"""

from __future__ import annotations

from asm import DW, R0, R1, R7, R10, Program, Slot, W

from ..toolkit.arguments import Arguments
from ..toolkit.flavours import BtfTracepoint, RawTracepoint, Tracepoint
from ..toolkit.netns import emit_netns_check
from ..toolkit.probe import Body, BuildTarget, Probe
from .connections import (
    ADOPTED,
    CONNECTION_MAPS_WANTED,
    ENTRIES,
    ENTRY,
    MAP_NAME,
    NO_RESET,
    RESET_RECEIVED,
    RESET_SENT,
    adopted_map,
    connections_map,
    emit_lookup_adopted,
    emit_lookup_connection,
    entries_map,
)


def _marking(direction: int) -> Body:
    """The body marking the event's connection, if followed and not yet marked, with `direction`."""

    def body(p: Program, args: Arguments, target: BuildTarget) -> None:
        key = p.frame.alloc("socket address", size=8)
        scratch = p.frame.alloc("read scratch", size=8)
        out = p.new_label("out")
        args.load(p, R7, "sk")
        p.jeq(R7, 0, out)
        if target.netns is not None:
            emit_netns_check(p, R7, target.kernel_types, target.netns, out, scratch, args.btf_pointers)
        _emit_mark(p, direction, target, args.btf_pointers, key, scratch, out)
        p.label(out)
        p.mov(R0, 0)
        p.exit()

    return body


def _emit_mark(p: Program, direction: int, target: BuildTarget, direct: bool, key: Slot, scratch: Slot,
               done: str) -> None:
    """Mark the connection of the socket in R7 (its entry by address, or its adopted one); a jump to `done`
    when it has none, or is marked already."""
    adopted, mark = p.new_label("adopted"), p.new_label("mark")
    p.stx(DW, R10, key.at(), R7)
    emit_lookup_connection(p, key, adopted, R7 if direct and target.kernel_walk else None)
    p.ja(mark)
    p.label(adopted)
    cookie = p.frame.alloc("cookie", size=8)
    emit_lookup_adopted(p, R7, target.kernel_types.field("sock_common.skc_cookie.counter"), cookie, scratch,
                        direct, done)
    p.label(mark)
    p.ldx(W, R1, R0, ENTRY.offset("reset"))
    p.jne(R1, NO_RESET, done)
    p.st(W, R0, ENTRY.offset("reset"), direction)


def _probe(name: str, tracepoint: str, direction: int, summary: str) -> Probe:
    return Probe(
        name=name,
        summary=summary,
        flavours=(
            BtfTracepoint(tracepoint, args=("sk",)),
            RawTracepoint(tracepoint, args=("sk",)),
            Tracepoint("tcp", tracepoint, fields={"sk": "skaddr"}),
        ),
        body=_marking(direction),
        shared_maps={MAP_NAME: connections_map, ENTRIES: entries_map, ADOPTED: adopted_map},
        optional_maps=CONNECTION_MAPS_WANTED,
    )


SENT = _probe("tcp_reset_sent", "tcp_send_reset", RESET_SENT, "TCP resets sent, marked on the connection")
RECEIVED = _probe("tcp_reset_received", "tcp_receive_reset", RESET_RECEIVED,
                  "TCP resets received, marked on the connection")
PROBES = (SENT, RECEIVED)
