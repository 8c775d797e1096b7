"""Counting by a key the kernel sees (a port, an address), up to a capacity, the rest under `other`.

A hash map has room for so many keys; the count of a key that finds it full
must still be counted, or the figures stop adding up. So each count goes to
its key's entry where the key has one or can get one, and otherwise to a
one-slot overflow array, which the reader reports under the label value
`other`. Two CPUs that make the same new key at once both land in the one
entry (the second finds the first's). Nothing is lost, and the sum over the
labels equals every event counted.
"""

from __future__ import annotations

from typing import Callable, Union

from asm import DW, R0, R1, R10, Program, Register, Slot, W

from ...bpf.maps import U64, ArrayMap, HashMap
from ...bpf.syscall import UpdateFlags
from ...figures import Labels
from ...vocabulary import OTHER
from .map_calls import emit_map_lookup, emit_map_update


def capped_count_maps(counts: str, overflow: str, key_codec, capacity: int, object_prefix: str,
                      overflow_slots: int = 1) -> dict:
    """The two maps' factories, for a probe's `maps`: `counts` (key -> u64, `capacity` keys) and the
    `overflow` array. `object_prefix` names them in the kernel (`gsp_<prefix>_n`, `gsp_<prefix>_o`). The
    config's `limits.<counts>` sets the capacity, where the config declares that key."""
    return {counts: lambda capacity=capacity: HashMap(key_codec, U64, capacity, name=f"gsp_{object_prefix}_n"[:15]),
            overflow: lambda: ArrayMap(U64, overflow_slots, name=f"gsp_{object_prefix}_o"[:15])}


def emit_capped_count(p: Program, counts: str, overflow: str, key: Slot, slot: Union[int, Register] = 0,
                      amount: Union[int, Register] = 1) -> None:
    """Emit `counts[key] += 1`, or `overflow[slot] += 1` when `counts` has no room for a new key (an
    overflow array of several slots keeps one `other` per kind: per protocol, say). The key is in stack
    slot `key`, filled whole (padding zeroed); the overflow path overwrites its first 4 bytes. `slot` and
    `amount` (what is added: 1, or a number of segments, bytes...) are numbers, or R6-R9 holding them.
    Clobbers R0-R5."""
    one = p.frame.alloc(f"{counts} first amount", size=8)
    counted, done = p.new_label(f"{counts}.counted"), p.new_label(f"{counts}.done")
    emit_map_lookup(p, counts, key)
    p.jne(R0, 0, counted)
    if isinstance(amount, Register):
        p.stx(DW, R10, one.at(), amount)
    else:
        p.st(DW, R10, one.at(), amount)
    emit_map_update(p, counts, key, one, UpdateFlags.NOEXIST)
    p.jeq32(R0, 0, done)
    emit_map_lookup(p, counts, key)  # another CPU made it first, or the map is full
    p.jne(R0, 0, counted)
    if isinstance(slot, Register):
        p.stx(W, R10, key.at(), slot)
    else:
        p.st(W, R10, key.at(), slot)
    emit_map_lookup(p, overflow, key)
    p.jeq(R0, 0, done)
    p.label(counted)
    if isinstance(amount, Register):
        p.atomic_add(DW, R0, 0, amount)
    else:
        p.mov(R1, amount)
        p.atomic_add(DW, R0, 0, R1)
    p.label(done)


def read_capped_counts(counts, overflow, label_of: Callable[[object], Labels],
                       other: Union[Labels, Callable[[int], Labels]]) -> dict[Labels, int]:
    """The counts as series: each key's under `label_of(key)`, each overflow slot that counted anything under
    `other` (the series whose capped label is OTHER; a function of the slot where there are several)."""
    series: dict[Labels, int] = {}
    for key, n in counts.items():
        labels = label_of(key)
        series[labels] = series.get(labels, 0) + n
    for slot, overflowed in overflow.items():
        if overflowed:
            labels = other(slot) if callable(other) else other
            series[labels] = series.get(labels, 0) + overflowed
    return series


__all__ = ["OTHER", "capped_count_maps", "emit_capped_count", "read_capped_counts"]
