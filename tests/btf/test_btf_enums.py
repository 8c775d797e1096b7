"""Kernel enums named from BTF (manifest.ENUMS): the running kernel's against bpftool, ENUM64 and absent
enums in hand-built BTF, and the JSON forms (cache and vendored table)."""

from __future__ import annotations

import json
import os

import pytest
from btf_builder import BTFBuilder
from btf_oracle import raw_enums

from gespann import btf
from gespann.btf import KernelTypes, cache, resolve
from gespann.btf.kerneltypes import TABLE_FORMAT
from gespann.btf.manifest import ENUMS, FIELDS, EnumRef
from gespann.btf.resolve import enum_names, resolve_manifest
from gespann.btf.sources import VMLINUX_BTF

DROP_REASON = "skb_drop_reason"


def bpftool_enum(path: str, name: str) -> dict[int, str] | None:
    """bpftool's values of the first ENUM/ENUM64 called `name` that has any (the first declared per value)."""
    defined = [values for values in raw_enums(path, name) if values]
    if not defined:
        return None
    names: dict[int, str] = {}
    for enumerator, value in defined[0]:
        names.setdefault(value, enumerator)
    return names


@pytest.mark.skipif(not VMLINUX_BTF.exists(), reason="kernel has no /sys/kernel/btf/vmlinux")
def test_drop_reasons_of_the_running_kernel_are_bpftools(tmp_path, monkeypatch):
    expected = bpftool_enum(str(VMLINUX_BTF), DROP_REASON)
    if expected is None:
        pytest.skip(f"kernel {os.uname().release} has no enum {DROP_REASON} (5.17+)")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cold = btf.kernel_types("btf")
    assert cold.enum(DROP_REASON) == expected
    assert expected[2] == "SKB_DROP_REASON_NOT_SPECIFIED"  # stable since 5.17 (0 and 1 came in 6.4)
    warm = btf.kernel_types("btf")
    assert warm.source.startswith("cache ") and warm.enums == cold.enums


def two_enums_blob() -> bytes:
    """ENUM64 `big` (signed and unsigned values past 32 bits), a declaration-only `fwd_first` before its
    definition, and `aliased` whose second enumerator repeats a value."""
    b = BTFBuilder()
    b.int_("int", 4, signed=True)
    b.enum64("big", 8, [("BIG_LOW", 1), ("BIG_HIGH", 2**40 + 3), ("BIG_NEGATIVE", -(2**35))], signed=True)
    b.enum64("ubig", 8, [("UBIG_TOP", 2**64 - 1)])
    b.enum("fwd_first", 4, [])
    b.enum("fwd_first", 4, [("FWD_ZERO", 0), ("FWD_TWO", 2)])
    b.enum("aliased", 4, [("ALIASED_A", 7), ("ALIASED_SAME_AS_A", 7), ("ALIASED_NEG", -1)], signed=True)
    return b.build()


def test_hand_built_enum64_and_absent_enums(tmp_path, monkeypatch):
    blob = two_enums_blob()
    spec = btf.load_bytes(blob, name="hand-built")
    assert enum_names(spec, "big") == {1: "BIG_LOW", 2**40 + 3: "BIG_HIGH", -(2**35): "BIG_NEGATIVE"}
    assert enum_names(spec, "ubig") == {2**64 - 1: "UBIG_TOP"}
    assert enum_names(spec, "fwd_first") == {0: "FWD_ZERO", 2: "FWD_TWO"}
    assert enum_names(spec, "aliased") == {7: "ALIASED_A", -1: "ALIASED_NEG"}
    raw = tmp_path / "hand-built.btf"
    raw.write_bytes(blob)
    for name in ("big", "ubig", "fwd_first", "aliased"):
        assert enum_names(spec, name) == bpftool_enum(str(raw), name), name
    assert bpftool_enum(str(raw), "absent") is None
    with pytest.raises(btf.TypeNotFound, match="no ENUM/ENUM64 named 'absent'"):
        enum_names(spec, "absent")
    with pytest.raises(btf.TypeNotFound):
        enum_names(spec, "int")  # a type of that name, but no enum

    monkeypatch.setattr(resolve, "FIELDS", ())
    monkeypatch.setattr(resolve, "ENUMS", (EnumRef("big"), EnumRef("absent")))
    types = resolve_manifest(spec, release="r", machine="m")
    assert types.enums == {"big": enum_names(spec, "big"), "absent": None}
    assert types.enum("absent") is None and types.enum("big")[-(2**35)] == "BIG_NEGATIVE"
    assert resolve_manifest(spec, attach=False).enums == {}
    monkeypatch.setattr(resolve, "ENUMS", (EnumRef("absent", required=True),))
    with pytest.raises(btf.TypeNotFound, match="absent"):
        resolve_manifest(spec)


def kernel_types_with_enums() -> KernelTypes:
    enums = {ref.name: {0: "ZERO", 2**40: "HIGH", -3: "NEGATIVE"} for ref in ENUMS}
    return KernelTypes("r", "x86_64", True, "test", {ref.key: None for ref in FIELDS}, {}, {}, enums)


def test_cache_round_trip_keeps_enums(tmp_path):
    types = kernel_types_with_enums()
    again = KernelTypes.from_json(types.to_json(), source="test")
    assert again == types and again.enum(DROP_REASON)[-3] == "NEGATIVE"
    assert KernelTypes.from_json(types._replace(enums={DROP_REASON: None}).to_json()).enum(DROP_REASON) is None
    cache.store("key", types, tmp_path)
    assert cache.load("key", tmp_path).enums == types.enums
    # An entry without the manifest's enums (format 1, from before them) is stale: the cache rebuilds it.
    doc = json.loads(types.to_json())
    doc["format"] = TABLE_FORMAT
    (tmp_path / "key.json").write_text(json.dumps(doc))
    assert cache.load("key", tmp_path) is None
    with pytest.raises(KeyError, match="no_such_enum is neither in gespann.s manifest"):
        types.enum("no_such_enum")


def test_vendored_table_form_carries_no_enums():
    """A table's document is unchanged by enums: format 1, no enums section; read back, the probe gets None."""
    types = kernel_types_with_enums()
    table = types.to_json(attach=False)
    doc = json.loads(table)
    assert doc["format"] == TABLE_FORMAT and set(doc) == {"format", "release", "machine", "byteorder", "source",
                                                          "fields"}
    read = KernelTypes.from_json(table)
    assert read.enums == {} and read.enum(DROP_REASON) is None and read.fields == types.fields
