"""The parser against bpftool on the real kernel BTF: every type's kind and name, and hundreds of
struct/field offsets, sizes and bitfields, including members of nested anonymous structs and unions."""

from __future__ import annotations

import random

import pytest
from btf_oracle import check_composites, dump, name

from gespann.btf import load_module, load_vmlinux
from gespann.btf import types as t
from gespann.btf.sources import SYSFS_BTF, VMLINUX_BTF

pytestmark = pytest.mark.skipif(not VMLINUX_BTF.exists(), reason="kernel has no /sys/kernel/btf/vmlinux")

SEED = 0x6E5A  # fixed: the same structs every run
COMPOSITES_CHECKED = 400


def test_every_type_kind_and_name():
    spec, oracle = load_vmlinux(), dump(str(VMLINUX_BTF))
    assert len(spec) - 1 == len(oracle)
    for type_id, want in oracle.items():
        assert spec.kind_of(type_id).name == want["kind"] and spec.name_of(type_id) == name(want), type_id


def test_struct_fields_match_bpftool(record_property):
    spec, oracle = load_vmlinux(), dump(str(VMLINUX_BTF))
    composites = sorted(i for i, t in oracle.items() if t["kind"] in ("STRUCT", "UNION") and t["members"])
    chosen = random.Random(SEED).sample(composites, COMPOSITES_CHECKED)
    chosen += [oracle_id for oracle_id in composites if name(oracle[oracle_id]) in ("sock", "tcp_sock", "sock_common")]
    pairs = check_composites(spec, oracle, chosen)
    record_property("struct_field_pairs", pairs)
    print(f"\n{pairs} struct/field pairs from {len(chosen)} structs and unions agree with bpftool")
    assert pairs >= 1000


def test_sampled_types_of_every_kind_decode_like_bpftool():
    spec, oracle = load_vmlinux(), dump(str(VMLINUX_BTF))
    ids = random.Random(SEED).sample(sorted(oracle), 3000)
    by_kind = {}
    for want in oracle.values():
        by_kind.setdefault(want["kind"], want["id"])  # at least one of each kind
    for type_id in ids + list(by_kind.values()):
        _assert_same(spec.type(type_id), oracle[type_id])


def _assert_same(got: t.Type, want: dict) -> None:
    kind = want["kind"]
    assert got.kind.name == kind
    if kind == "INT":
        assert (got.size, got.bit_offset, got.bits) == (want["size"], want["bits_offset"], want["nr_bits"])
        assert got.signed == (want["encoding"] == "SIGNED")
    elif kind in ("PTR",):
        assert got.target == want["type_id"]
    elif kind == "ARRAY":
        assert (got.elem, got.index, got.nelems) == (want["type_id"], want["index_type_id"], want["nr_elems"])
    elif kind in ("ENUM", "ENUM64"):
        assert got.size == want["size"] and got.signed == (want["encoding"] == "SIGNED")
        # bpftool prints an unsigned ENUM's s32 field sign-extended to 64 bits; C reads it as u32.
        mask = 0xFFFFFFFF if kind == "ENUM" and not got.signed else -1
        assert [(v.name, v.value) for v in got.values] == [(v["name"], v["val"] & mask) for v in want["values"]]
    elif kind == "FWD":
        assert got.union == (want["fwd_kind"] == "union")
    elif kind in ("TYPEDEF", "CONST", "VOLATILE", "RESTRICT", "TYPE_TAG"):
        assert got.type == want["type_id"]
    elif kind == "FUNC":
        assert got.proto == want["type_id"] and got.linkage == ["static", "global", "extern"].index(want["linkage"])
    elif kind == "FUNC_PROTO":
        params = [(name(p), p["type_id"]) for p in want["params"]]
        if got.variadic:
            params = params[:-1]
        assert got.return_type == want["ret_type_id"] and [(p.name, p.type) for p in got.params] == params
    elif kind == "VAR":
        assert got.type == want["type_id"]
    elif kind == "DATASEC":
        assert [(v.type, v.offset, v.size) for v in got.vars] == [
            (v["type_id"], v["offset"], v["size"]) for v in want["vars"]]
    elif kind == "DECL_TAG":
        assert (got.type, got.component_idx) == (want["type_id"], want["component_idx"])
    elif kind == "FLOAT":
        assert got.size == want["size"]


def _sysfs_modules() -> list[str]:
    return sorted(p.name for p in SYSFS_BTF.iterdir() if p.name != "vmlinux")[:3] if SYSFS_BTF.exists() else []


@pytest.mark.skipif(not _sysfs_modules(), reason="this kernel exposes no module BTF under /sys/kernel/btf")
@pytest.mark.parametrize("module", _sysfs_modules() or ["none"])
def test_loaded_module_btf_matches_bpftool(module):
    """Split BTF of loaded modules (Debian's module BTF is also checked, in test_btf_tables.py)."""
    spec = load_module(module)
    oracle = {**dump(str(VMLINUX_BTF)), **dump(str(SYSFS_BTF / module), str(VMLINUX_BTF))}  # -B: split types only
    own = [i for i in oracle
           if i >= spec.first_id and oracle[i]["kind"] in ("STRUCT", "UNION") and oracle[i]["members"]]
    for type_id in [i for i in oracle if i >= spec.first_id]:
        assert spec.kind_of(type_id).name == oracle[type_id]["kind"] and spec.name_of(type_id) == name(oracle[type_id])
    check_composites(spec, oracle, own)
