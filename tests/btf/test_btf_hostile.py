"""Truncated, corrupt and hostile BTF: always a BTFError, never a hang, a crash or unbounded memory."""

from __future__ import annotations

import struct
import tracemalloc

import pytest
from btf_builder import BTFBuilder, sample_blob
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gespann.btf import BTFError, MalformedBTF
from gespann.btf import types as t
from gespann.btf.fieldpath import locate, member_names
from gespann.btf.functions import func_signature
from gespann.btf.spec import Spec
from gespann.btf.typeinfo import sizeof, type_name

BLOB, IDS = sample_blob()
HEADER = 24


def exercise(blob: bytes, base: Spec | None = None) -> None:
    """Everything a consumer does with a Spec; only BTFError may come out."""
    try:
        spec = Spec(blob, base=base, name="hostile")
        for type_id in range(len(spec)):
            typ = spec.type(type_id)
            type_name(spec, type_id)
            if isinstance(typ, t.Composite):
                for name in member_names(spec, typ)[:8]:
                    _swallow(locate, spec, typ, name)
            if isinstance(typ, (t.Array, t.Typedef, t.Qualifier)):
                _swallow(sizeof, spec, type_id)
            if isinstance(typ, t.Func) and typ.name:
                _swallow(func_signature, spec, typ.name)
        spec.lookup_names(["sample", "int", "sample_fn", "nothing"])
        _swallow(locate, spec, "sample", "vec[2]")
    except BTFError:
        pass


def _swallow(call, *args):
    try:
        call(*args)
    except BTFError:
        pass


def _patch_word(blob: bytes, word_index: int, value: int) -> bytes:
    at = HEADER + 4 * word_index
    return blob[:at] + struct.pack("<I", value & 0xFFFFFFFF) + blob[at + 4 :]


def _record_word(type_id: int) -> int:
    """Word index (in the type section) of a type's record in BLOB."""
    return Spec(BLOB)._offsets[type_id - 1]


def test_every_truncation():
    for length in range(len(BLOB)):
        exercise(BLOB[:length])


def test_truncated_header_and_bad_magic_say_so():
    with pytest.raises(MalformedBTF, match="shorter than a BTF header"):
        Spec(BLOB[:10])
    with pytest.raises(MalformedBTF, match="bad magic"):
        Spec(b"\x00\x00" + BLOB[2:])
    with pytest.raises(MalformedBTF, match="version"):
        Spec(BLOB[:2] + b"\x02" + BLOB[3:])


@pytest.mark.parametrize(
    "field, value, message",
    [
        (1, 10**6, "header length"),  # hdr_len
        (3, 10**6, "type section"),  # type_len
        (3, 2, "past the data|not 4-byte aligned"),
        (4, 0, "overlap"),  # str_off inside the type section
        (5, 10**6, "string section"),  # str_len
    ],
)
def test_bad_header_fields(field, value, message):
    words = list(struct.unpack_from("<IIIIII", BLOB, 0))
    words[field] = value
    with pytest.raises(MalformedBTF, match=message):
        Spec(struct.pack("<IIIIII", *words) + BLOB[HEADER:])


def test_unterminated_string_section():
    with pytest.raises(MalformedBTF, match="NUL-terminated"):
        Spec(BLOB[:-1] + b"x")


def test_unknown_kind_and_huge_vlen():
    info_word = _record_word(IDS["sample"]) + 1
    with pytest.raises(MalformedBTF, match="invalid kind"):
        Spec(_patch_word(BLOB, info_word, 25 << 24))
    with pytest.raises(MalformedBTF, match="runs past the end"):
        Spec(_patch_word(BLOB, info_word, 4 << 24 | 0xFFFF))


def test_out_of_range_type_id_and_string_offset():
    ptr = _record_word(IDS["ptr"])
    with pytest.raises(MalformedBTF, match="past the last type"):
        Spec(_patch_word(BLOB, ptr + 2, 10**6)).type(IDS["ptr"])
    with pytest.raises(MalformedBTF, match="string offset"):
        Spec(_patch_word(BLOB, _record_word(IDS["sample"]), 10**6)).type(IDS["sample"])


def _cyclic(build) -> Spec:
    b = BTFBuilder()
    build(b)
    return Spec(b.build(), name="cyclic")


def test_typedef_pointing_to_itself():
    spec = _cyclic(lambda b: b.typedef("loop", 1))
    with pytest.raises(MalformedBTF, match="cycle"):
        sizeof(spec, 1)
    with pytest.raises(MalformedBTF, match="cycle"):
        locate(spec, "loop", "x")
    assert type_name(spec, 1) == "loop"  # C spells a typedef by its name: nothing to follow


def test_qualifier_cycle_and_self_array():
    spec = _cyclic(lambda b: (b.modifier("CONST", 2), b.modifier("VOLATILE", 1), b.array(3, 3, 2)))
    for type_id in (1, 2, 3):
        with pytest.raises(MalformedBTF, match="cycle"):
            sizeof(spec, type_id)


def test_anonymous_member_cycle():
    spec = _cyclic(lambda b: b.composite("ouroboros", 4, [("", 1, 0)]))
    with pytest.raises(MalformedBTF, match="cycle"):
        locate(spec, "ouroboros", "anything")


def test_function_prototype_that_takes_itself():
    spec = _cyclic(lambda b: (b.ptr(2), b.func_proto(1, [("self", 1)])))
    with pytest.raises(MalformedBTF, match="cycle"):
        type_name(spec, 2)


def test_memory_stays_proportional_to_the_data():
    """A blob of 100k tiny records: the index costs a few bytes per record, not per claimed member."""
    b = BTFBuilder()
    for _ in range(100_000):
        b.ptr(0)
    blob = b.build()
    tracemalloc.start()
    spec = Spec(blob)
    spec.lookup_names(["x"])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(spec) == 100_001
    assert peak < 3 * len(blob) + (1 << 20)


@settings(max_examples=400, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(BLOB) - 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_random_byte_mutations(mutations):
    blob = bytearray(BLOB)
    for at, value in mutations:
        blob[at] = value
    exercise(bytes(blob))


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, (len(BLOB) - HEADER) // 4 - 1), st.sampled_from([0, 1, 2, 0xFFFF, 0xFFFFFFFF, 1 << 24, 1 << 31]))
def test_random_word_mutations(word, value):
    exercise(_patch_word(BLOB, word, value))


@settings(max_examples=100, deadline=2000)
@given(st.binary(min_size=0, max_size=512))
def test_random_bytes_after_a_valid_header(tail):
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(tail) // 8 * 4, len(tail) // 8 * 4,
                         len(tail) - len(tail) // 8 * 4)
    exercise(header + tail)


@settings(max_examples=100, deadline=2000)
@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1, max_size=6))
def test_split_btf_mutations(mutations):
    base = Spec(BLOB)
    split = BTFBuilder(first_id=len(base), string_base=len(BLOB) - HEADER - int.from_bytes(BLOB[12:16], "little"))
    split.composite("module_state", 16, [("owner", IDS["sample"], 0), ("count", IDS["u32"], 64)])
    split.typedef("mod_t", len(base))
    blob = bytearray(split.build())
    for at, value in mutations:
        if at < len(blob):
            blob[at] = value
    exercise(bytes(blob), base=base)
