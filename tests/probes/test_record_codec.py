"""Map codecs parse a Record with struct exactly as construct does (construct is the oracle), padding included."""
import random

import pytest

from asm import Record, array, s32, u8, u16, u64
from gespann.probes.tcp.connections import ENTRY
from gespann.probes.tcp.lifecycle import OWNER
from gespann.probes.tcp.records import RECORD
from gespann.probes.toolkit.record_codec import RecordCodec, struct_format
from gespann.probes.udp.flows import FLOW, KEY

PADDED = Record("padded", [("a", u8), ("b", u64), ("c", u16), ("name", array(u8, 3)), ("d", s32)])


def plain(value):
    return bytes(value) if isinstance(value, (list, bytearray)) else value


@pytest.mark.parametrize("record", [KEY, FLOW, ENTRY, OWNER, RECORD, PADDED], ids=lambda r: r.name)
def test_struct_parse_equals_constructs(record):
    codec, rng = RecordCodec(record), random.Random(record.size)
    for _ in range(100):
        data = bytearray(rng.getrandbits(8) for _ in range(record.size))
        oracle = record.parse(bytes(data))
        fast = codec.parse(bytes(data))
        assert {name: plain(value) for name, value in fast._asdict().items()} == \
            {field.name: plain(oracle[field.name]) for field in record.fields}
        rebuilt = record.build(oracle)  # padding comes back as zeros
        assert codec.build(fast) == rebuilt == codec.build({f.name: oracle[f.name] for f in record.fields})


def test_the_format_follows_the_layout():
    assert struct_format(PADDED) == "=B7xQH3s3xi4x"  # alignment padding, then the record's tail padding
    assert RecordCodec(PADDED).sizeof() == PADDED.size == 32


def test_nested_records_are_refused():
    with pytest.raises(TypeError, match="only scalars and byte arrays"):
        struct_format(Record("nest", [("inner", OWNER)]))


def test_building_from_a_mapping_names_a_missing_field():
    with pytest.raises(ValueError, match="padded: no value for field 'd'"):
        RecordCodec(PADDED).build({"a": 1, "b": 2, "c": 3, "name": b"abc"})
