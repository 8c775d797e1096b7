"""The code a probe writes to send a connection record out of the kernel, through a RecordChannel.

The channel (gespann.bpf.channel) owns the maps and reads the records back;
this writes the helper calls that fill them: bpf_ringbuf_output, counting a
record the ring has no room for, or bpf_perf_event_output.
"""

from __future__ import annotations

from asm import R0, R1, R2, R3, R4, R5, R10, Program, Register, Slot, W

from ...bpf.channel import RecordChannel
from ...bpf.syscall import BPF_F_CURRENT_CPU
from .map_calls import emit_increment


def emit_record_output(p: Program, channel: RecordChannel, ctx: Register, record: Slot) -> None:
    """Emit code sending the stack slot `record` (its `size` bytes) as one record.

    `ctx` holds the program's context (perf output needs it). Clobbers
    R0-R5. On the ring buffer, a record that does not fit is counted in the
    lost counter, whose key is written over the record's first 4 bytes.
    """
    if channel.kind == "perf":
        p.mov(R1, ctx)
        p.ld_map(R2, channel.name)
        p.mov32(R3, BPF_F_CURRENT_CPU)  # a 32-bit move: no sign extension into the flag bits
        p.mov(R4, R10)
        p.add(R4, record.at())
        p.mov(R5, record.size)
        p.call("perf_event_output")
        return
    sent = p.new_label(f"{channel.name}.sent")
    p.ld_map(R1, channel.name)
    p.mov(R2, R10)
    p.add(R2, record.at())
    p.mov(R3, record.size)
    p.mov(R4, 0)
    p.call("ringbuf_output")
    p.jeq(R0, 0, sent)
    emit_count_lost(p, channel.lost_name, record)
    p.label(sent)


def emit_count_lost(p: Program, lost_map: str, key: Slot) -> None:
    """Emit `lost_map[0] += 1` for this CPU, for the branch where ringbuf_reserve returned NULL.

    The first 4 bytes of the stack slot `key` are overwritten with the counter's key.
    Clobbers R0-R5.
    """
    p.st(W, R10, key.at(), 0)
    emit_increment(p, lost_map, key)
