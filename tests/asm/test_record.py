"""Record layouts follow C's natural alignment and decode what they encode."""
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asm import DW, AsmError, H, Record, array, s16, s64, u8, u16, u32, u64

ConnEvent = Record(
    "conn_event",
    [("ts_ns", u64), ("pid", u32), ("sport", u16), ("dport", u16), ("saddr", array(u8, 16)), ("state", u8)],
)


def test_offsets_and_size_match_the_c_layout():
    # struct conn_event { u64 ts_ns; u32 pid; u16 sport, dport; u8 saddr[16]; u8 state; };
    # has offsets 0, 8, 12, 14, 16, 32 and sizeof 40 (tail-padded to 8).
    assert [(f.name, f.offset, f.size) for f in ConnEvent.fields] == [
        ("ts_ns", 0, 8),
        ("pid", 8, 4),
        ("sport", 12, 2),
        ("dport", 14, 2),
        ("saddr", 16, 16),
        ("state", 32, 1),
    ]
    assert ConnEvent.size == 40 and ConnEvent.alignment == 8
    assert ConnEvent.offset("sport") == 12
    assert ConnEvent.field("sport").size == 2
    assert ConnEvent.field("sport").insn_size == H
    assert ConnEvent.field("ts_ns").insn_size == DW


def test_interior_padding_and_nesting():
    # struct inner { u8 a; u32 b; };               -> b at 4, sizeof 8, align 4
    # struct outer { u8 tag; struct inner in; u16 c[3]; }; -> in at 4, c at 12, sizeof 20
    inner = Record("inner", [("a", u8), ("b", u32)])
    outer = Record("outer", [("tag", u8), ("inner", inner), ("c", array(u16, 3))])
    assert (inner.offset("b"), inner.size, inner.alignment) == (4, 8, 4)
    assert (outer.offset("inner"), outer.offset("c"), outer.size) == (4, 12, 20)
    raw = outer.build({"tag": 1, "inner": {"a": 2, "b": 3}, "c": [4, 5, 6]})
    assert raw == struct.pack("<B3xB3xI3H2x", 1, 2, 3, 4, 5, 6)


def test_struct_module_agrees_on_a_native_layout():
    # Python's struct with native alignment ('@') lays out like the C compiler.
    layout = Record("mixed", [("a", u8), ("b", u64), ("c", u16), ("d", u32), ("e", u8)])
    assert layout.size == struct.calcsize("@BQHIB") + 7  # '@' adds no tail padding
    assert [f.offset for f in layout.fields] == [0, 8, 16, 20, 24]


@given(
    ts_ns=st.integers(0, 2**64 - 1),
    pid=st.integers(0, 2**32 - 1),
    sport=st.integers(0, 2**16 - 1),
    saddr=st.binary(min_size=16, max_size=16),
)
def test_build_then_parse_round_trips(ts_ns, pid, sport, saddr):
    values = dict(ts_ns=ts_ns, pid=pid, sport=sport, dport=443, saddr=saddr, state=1)
    raw = ConnEvent.build(values)
    assert len(raw) == ConnEvent.size
    parsed = ConnEvent.parse(raw + b"\0" * 4)  # trailing sample padding is ignored
    assert {name: parsed[name] for name in values} == values


def test_signed_fields_decode_negative():
    signed = Record("signed", [("delta", s64), ("small", s16)])
    assert signed.parse(signed.build({"delta": -5, "small": -2})).small == -2


def test_layout_errors_are_explicit():
    with pytest.raises(AsmError, match="no field 'nope'"):
        ConnEvent.offset("nope")
    with pytest.raises(AsmError, match="two fields named 'a'"):
        Record("dup", [("a", u8), ("a", u8)])
    with pytest.raises(AsmError, match="needs 40 bytes, got 3"):
        ConnEvent.parse(b"abc")
    with pytest.raises(AsmError, match="not a scalar"):
        ConnEvent.field("saddr").insn_size
