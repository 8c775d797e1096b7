"""bpftool as the oracle: its JSON dump of a BTF blob, and C layout rules computed from it alone."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gespann.btf import types as gt
from gespann.btf.fieldpath import locate

BPFTOOL = shutil.which("bpftool") or "/usr/sbin/bpftool"
ALIASES = {"TYPEDEF", "CONST", "VOLATILE", "RESTRICT", "TYPE_TAG"}
SIZED = {"INT", "STRUCT", "UNION", "ENUM", "ENUM64", "FLOAT", "DATASEC"}


def need_bpftool() -> None:
    if not Path(BPFTOOL).exists():
        pytest.skip("bpftool is not installed (tools/setup-host.sh installs it)")


@functools.lru_cache(maxsize=8)
def dump(path: str, base: str | None = None) -> dict[int, dict]:
    """bpftool -j btf dump file PATH [-B BASE], as {id: type}."""
    need_bpftool()
    argv = [BPFTOOL, "-j", "btf", "dump", "file", path]
    if base:
        argv[1:1] = ["-B", base]
    out = subprocess.run(argv, check=True, capture_output=True).stdout
    return {t["id"]: t for t in json.loads(out)["types"]}


def raw_enums(path: str, enum_name: str) -> list[list[tuple[str, int]]]:
    """(enumerator, value) lists of every ENUM/ENUM64 called enum_name, in id order, from bpftool's raw dump.

    The raw dump, not the JSON: bpftool's JSON prints an unsigned ENUM's s32 value sign-extended to 64 bits
    (0xffff0000 as 0xffffffffffff0000); the raw dump prints it as C reads it.
    """
    need_bpftool()
    lines = subprocess.run([BPFTOOL, "btf", "dump", "file", path, "format", "raw"], check=True,
                           capture_output=True, text=True).stdout.splitlines()
    header = re.compile(r"\[\d+\] ENUM(?:64)? '(?P<name>.*)' encoding=\w+ size=\d+ vlen=(?P<vlen>\d+)$")
    value = re.compile(r"\t'(?P<name>.*)' val=(?P<val>-?\d+)(?:U?LL)?$")  # ENUM64 values end in LL or ULL
    found = []
    for at, line in enumerate(lines):
        match = header.match(line)
        if match and match["name"] == enum_name:
            entries = [value.match(entry) for entry in lines[at + 1 : at + 1 + int(match["vlen"])]]
            assert all(entries), f"unexpected bpftool raw output after {line!r}"
            found.append([(m["name"], int(m["val"])) for m in entries])
    return found


def name(t: dict) -> str:
    return "" if t.get("name") == "(anon)" else t.get("name", "")


def strip(types: dict, type_id: int) -> dict:
    for _ in range(64):
        t = types.get(type_id, {"kind": "VOID"})
        if t["kind"] not in ALIASES:
            return t
        type_id = t["type_id"]
    raise AssertionError("alias chain too long in bpftool output")


def size(types: dict, type_id: int) -> int:
    t = strip(types, type_id)
    if t["kind"] == "ARRAY":
        return t["nr_elems"] * size(types, t["type_id"])
    if t["kind"] == "PTR":
        return 8
    assert t["kind"] in SIZED, t
    return t["size"]


def reachable_fields(types: dict, composite: dict, bit_base: int = 0):
    """(name, absolute bit offset, bitfield size, member type id) of every member C lets you name."""
    for m in composite["members"]:
        bits = bit_base + m["bits_offset"]
        if name(m):
            yield name(m), bits, m.get("bitfield_size", 0), m["type_id"]
        else:
            inner = strip(types, m["type_id"])
            if inner["kind"] in ("STRUCT", "UNION"):
                yield from reachable_fields(types, inner, bits)


def check_composites(spec, oracle, composite_ids) -> int:
    """Compare members and every reachable field; returns the number of struct/field pairs checked."""
    pairs = 0
    for type_id in composite_ids:
        want, got = oracle[type_id], spec.type(type_id)
        assert isinstance(got, gt.Composite) and got.size == want["size"] and got.name == name(want)
        assert [(m.name, m.type, m.bit_offset, m.bitfield_size) for m in got.members] == [
            (name(m), m["type_id"], m["bits_offset"], m.get("bitfield_size", 0)) for m in want["members"]
        ]
        for field, bit_offset, bit_size, member_type in reachable_fields(oracle, want):
            loc = locate(spec, got, field)
            assert (loc.bit_offset, loc.bit_size) == (bit_offset, bit_size), (got.name, field)
            if bit_size == 0:
                assert (loc.offset, loc.size) == (bit_offset // 8, size(oracle, member_type)), (got.name, field)
            else:
                assert loc.offset * 8 <= bit_offset and bit_offset + bit_size <= (loc.offset + loc.size) * 8
            pairs += 1
    return pairs
