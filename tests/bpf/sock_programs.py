"""Programs on sock:inet_sock_set_state for the tests, written in the asm DSL.

Field offsets and sizes come from the tracefs format file; each program only
looks at transitions of sockets on the test's own port.
"""
from typing import Optional

from asm import R0, R1, R2, R3, R6, R7, R10, Program, Record, Size, Slot, array, u8, u16, u32
from gespann.bpf.channel import RecordChannel
from gespann.bpf.tracefs import TracepointFormat
from gespann.probes.toolkit.arguments import emit_load_field
from gespann.probes.toolkit.map_calls import emit_increment
from gespann.probes.toolkit.record_output import emit_count_lost, emit_record_output

STORE_SIZES = {1: Size.B, 2: Size.H, 4: Size.W, 8: Size.DW}

StateChange = Record("state_change", [
    ("oldstate", u32), ("newstate", u32), ("sport", u16), ("dport", u16),
    ("family", u16), ("protocol", u16), ("saddr", array(u8, 4)), ("daddr", array(u8, 4)),
])


def _only_port(p: Program, fmt: TracepointFormat, port: int, skip: str) -> None:
    """R6 = ctx; fall through for events on `port` (either end), jump to `skip` otherwise."""
    mine = p.new_label("mine")
    p.mov(R6, R1)
    emit_load_field(p, fmt, R2, R6, "sport")
    p.jeq(R2, port, mine)
    emit_load_field(p, fmt, R2, R6, "dport")
    p.jne(R2, port, skip)
    p.label(mine)


def count(p: Program, counts: str, key: Slot, done: str) -> None:
    """counts[key] += 1 for the u32 key in stack slot `key`, then on to `done`; returns 0 there."""
    emit_increment(p, counts, key)
    p.label(done)
    p.mov(R0, 0)
    p.exit()


def count_new_states(fmt: TracepointFormat, port: int, name: str = "gt_count") -> Program:
    """counts[newstate] += 1 (an ArrayMap of u64 named "counts")."""
    p = Program(name)
    _only_port(p, fmt, port, "out")
    key = p.frame.alloc("newstate", size=4)
    emit_load_field(p, fmt, R2, R6, "newstate")
    p.stx(Size.W, R10, key.at(), R2)
    count(p, "counts", key, "out")
    return p


def _copy_state_change(p: Program, fmt: TracepointFormat, record: Slot) -> None:
    """Fill the StateChange in stack slot `record` from the tracepoint record at R6."""
    for field in StateChange.fields:
        emit_load_field(p, fmt, R2, R6, field.name)
        p.stx(STORE_SIZES[field.size], R10, record.at(field.name), R2)


def send_state_changes(fmt: TracepointFormat, port: int, channel: RecordChannel,
                       name: str = "gt_send") -> Program:
    """One StateChange record per transition, through the channel's output code."""
    p = Program(name)
    record = p.frame.alloc("state change", StateChange)
    _only_port(p, fmt, port, "out")
    _copy_state_change(p, fmt, record)
    emit_record_output(p, channel, R6, record)
    p.label("out")
    p.mov(R0, 0)
    p.exit()
    return p


def reserve_state_changes(fmt: TracepointFormat, port: int, name: str = "gt_reserve",
                          discard_unless: Optional[int] = None) -> Program:
    """The ring buffer's reserve/submit path: a failed reserve bumps the "lost" counter.
    With `discard_unless`, records of other new states are reserved, filled and discarded."""
    p = Program(name)
    _only_port(p, fmt, port, "out")
    p.ld_map(R1, "events")
    p.mov(R2, StateChange.size)
    p.mov(R3, 0)
    p.call("ringbuf_reserve")
    p.jne(R0, 0, "reserved")
    emit_count_lost(p, "lost", p.frame.alloc("lost key", size=4))
    p.ja("out")
    p.label("reserved")
    p.mov(R7, R0)
    for field in StateChange.fields:
        emit_load_field(p, fmt, R2, R6, field.name)
        p.stx(STORE_SIZES[field.size], R7, field.offset, R2)
    p.mov(R1, R7)
    p.mov(R2, 0)
    if discard_unless is not None:
        p.ldx(Size.W, R3, R7, StateChange.offset("newstate"))
        p.jeq(R3, discard_unless, "submit")
        p.call("ringbuf_discard")
        p.ja("out")
        p.label("submit")
    p.call("ringbuf_submit")
    p.label("out")
    p.mov(R0, 0)
    p.exit()
    return p
