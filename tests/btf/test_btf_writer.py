"""BTF that gespann writes for its own types (socket storage values), checked by bpftool and by the parser.

The kernel accepts it too: every socket-storage map the root tests create loads one.
"""
from __future__ import annotations

import pytest
from btf_oracle import dump

from gespann.btf import load_bytes
from gespann.btf.writer import storage_types
from gespann.probes.tcp.connections import ENTRY
from gespann.probes.tcp.walk import COUNTED
from gespann.probes.toolkit.socket_storage import _members


@pytest.mark.parametrize("record", [COUNTED, ENTRY], ids=lambda r: r.name)
def test_a_records_layout_is_written_as_bpftool_reads_it(tmp_path, record):
    members = list(_members(record))
    types = storage_types(f"gsp_{record.name}", members, record.size)
    path = tmp_path / "value.btf"
    path.write_bytes(types.blob)
    seen = dump(str(path))
    key, value = seen[types.key_type_id], seen[types.value_type_id]
    assert ((key["kind"], key["size"], key["bits_offset"], key["nr_bits"], key["encoding"])
            == ("INT", 4, 0, 32, "SIGNED"))
    assert (value["kind"], value["name"], value["size"]) == ("STRUCT", f"gsp_{record.name}", record.size)
    written = [(m["name"], seen[m["type_id"]]["size"], m["bits_offset"] // 8) for m in value["members"]]
    assert written == members
    # every byte of the record is covered, once, in order
    assert sum(size for _, size, _ in members) == record.size
    assert all(offset == sum(size for _, size, _ in members[:i]) for i, (_, _, offset) in enumerate(members))
    spec = load_bytes(types.blob)
    assert spec.type(types.value_type_id).size == record.size


def test_arrays_of_bytes_become_words_and_other_types_are_refused():
    assert [m for m in _members(ENTRY) if m[0].startswith("comm")] == [("comm_0", 8, 40), ("comm_1", 8, 48)]
    from asm import Record, array, u8

    with pytest.raises(ValueError, match="only integers"):
        list(_members(Record("nested", [("inner", Record("inner", [("x", u8)]))])))
    assert list(_members(Record("odd", [("b", array(u8, 3))]))) == [("b_0", 1, 0), ("b_1", 1, 1), ("b_2", 1, 2)]
