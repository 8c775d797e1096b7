"""kernel_types(): BTF, the disk cache, vendored tables and their selection, and the CLI hook."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import pytest

from gespann import btf
from gespann.btf import KernelTypes, NoKernelTypes, kernel
from gespann.btf import vendored
from gespann.btf.manifest import FIELDS
from gespann.btf.resolve import resolve_manifest
from gespann.btf.sources import VMLINUX_BTF

ROOT = Path(__file__).resolve().parents[2]
needs_btf = pytest.mark.skipif(not VMLINUX_BTF.exists(), reason="kernel has no /sys/kernel/btf/vmlinux")


def tools():
    sys.path[:0] = [str(ROOT / "tools")]
    import vmlinux_tables

    return vmlinux_tables


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "gespann"


@pytest.fixture
def running_tables(tmp_path) -> Path:
    """A tables directory holding a table made from this kernel's BTF."""
    out = tmp_path / "tables"
    tools().running_table(out)
    return out


@needs_btf
def test_btf_source_resolves_every_manifest_field(cache_home):
    types = btf.kernel_types("btf", use_cache=False)
    assert set(types.fields) == {ref.key for ref in FIELDS}
    for ref in FIELDS:
        if ref.required:
            assert types.field(ref.key).size > 0
    assert types.offset("sock_common.skc_dport") == btf.offsetof("sock", "__sk_common.skc_dport").offset
    assert types.func("tcp_connect").params[0].type == "struct sock *"
    assert types.tracepoint_id("inet_sock_set_state") > 0
    assert not cache_home.exists()


@needs_btf
def test_cache_is_written_then_read(cache_home):
    cold = btf.kernel_types("btf")
    entries = list(cache_home.glob("btf-*.json"))
    assert len(entries) == 1
    warm = btf.kernel_types("btf")
    assert warm.source.startswith("cache ") and warm.fields == cold.fields and warm.funcs == cold.funcs
    entries[0].write_text("{not json")  # a corrupt entry is ignored and rewritten
    assert btf.kernel_types("btf").source == str(VMLINUX_BTF)
    assert btf.kernel_types("btf").source.startswith("cache ")


@needs_btf
def test_unwritable_cache_is_silently_skipped(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # gespann/ cannot be created under a file
    assert btf.kernel_types("btf").source == str(VMLINUX_BTF)


@needs_btf
def test_forced_vendored_path_matches_btf(running_tables, cache_home):
    from_btf = btf.kernel_types("btf", use_cache=False)
    from_table = btf.kernel_types("vendored", tables=running_tables)
    assert from_table.fields == from_btf.fields
    assert from_table.source.startswith("vendored table") and not from_table.funcs


@needs_btf
def test_committed_table_of_the_running_kernel_matches_btf():
    release = os.uname().release
    path = vendored.table_path(release, os.uname().machine)
    if not path.exists():
        pytest.skip(f"no committed table for {release}: python3 tools/vmlinux_tables.py running")
    assert vendored.load_table(path).fields == btf.kernel_types("btf", use_cache=False).fields


@needs_btf
def test_auto_falls_back_to_a_table_without_btf(running_tables, monkeypatch):
    monkeypatch.setattr(kernel, "kernel_has_btf", lambda: False)
    assert btf.kernel_types(tables=running_tables).source.startswith("vendored table")


def test_no_btf_and_no_table_names_the_generating_command(tmp_path, monkeypatch):
    monkeypatch.setattr(kernel, "kernel_has_btf", lambda: False)
    with pytest.raises(NoKernelTypes) as raised:
        btf.kernel_types(release="4.19.0-99-amd64", machine="x86_64", tables=tmp_path)
    message = str(raised.value)
    assert "tools/vmlinux_tables.py file /boot/vmlinuz-4.19.0-99-amd64 --release 4.19.0-99-amd64" in message
    assert "/sys/kernel/btf/vmlinux" in message


def _table(directory: Path, release: str, machine: str = "x86_64") -> None:
    types = KernelTypes(release, machine, True, "test", {ref.key: None for ref in FIELDS})
    path = vendored.table_path(release, machine, directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(types.to_json(attach=False))


def test_table_selection_exact_then_same_series_and_flavour(tmp_path, caplog):
    for release in ("6.1.0-30-amd64", "6.1.0-37-amd64", "6.1.0-37-cloud-amd64", "6.12.5+deb13-amd64"):
        _table(tmp_path, release)
    choose = vendored.choose_table
    assert choose("6.1.0-37-amd64", "x86_64", tmp_path).stem == "6.1.0-37-amd64"
    with caplog.at_level(logging.WARNING, logger="gespann.btf.vendored"):
        assert choose("6.1.0-38-amd64", "x86_64", tmp_path).stem == "6.1.0-37-amd64"  # nearest older
    assert "using those of 6.1.0-37-amd64" in caplog.text
    assert choose("6.1.0-20-amd64", "x86_64", tmp_path).stem == "6.1.0-30-amd64"  # nearest newer
    assert choose("6.1.0-40-cloud-amd64", "x86_64", tmp_path).stem == "6.1.0-37-cloud-amd64"
    for release, machine in (("6.1.0-38-rt-amd64", "x86_64"), ("5.10.0-1-amd64", "x86_64"), ("6.1.0-37-amd64", "aarch64")):
        with pytest.raises(NoKernelTypes):
            choose(release, machine, tmp_path)
    with pytest.raises(NoKernelTypes):
        choose("6.1.0-38-amd64", "x86_64", tmp_path, fallback=False)


def test_json_round_trip_and_stale_documents():
    location = btf.FieldLocation("sock", "sk_protocol", 516, 4, 4136, 8, "unsigned int")
    signature = btf.FuncSignature("f", 7, "int", (btf.FuncParam("sk", "struct sock *"),))
    types = KernelTypes("r", "x86_64", True, "test", {"sock.sk_protocol": location}, {"f": signature, "g": None}, {"t": 3})
    again = KernelTypes.from_json(types.to_json(), source="test")
    assert again == types
    assert again.missing_fields()  # a document of another manifest is stale
    doc = json.loads(types.to_json())
    doc["format"] = 99
    with pytest.raises(btf.MalformedBTF, match="format"):
        KernelTypes.from_json(json.dumps(doc))


def test_absent_and_unknown_fields(tmp_path):
    _table(tmp_path, "6.1.0-37-amd64")
    types = btf.kernel_types("vendored", release="6.1.0-37-amd64", machine="x86_64", tables=tmp_path)
    assert types.optional_field("sock.sk_cgrp_data") is None
    with pytest.raises(btf.FieldNotFound, match="does not exist on kernel 6.1.0-37-amd64"):
        types.field("sock.sk_cgrp_data")
    with pytest.raises(KeyError, match="manifest"):
        types.field("sock.sk_nonexistent")


@needs_btf
def test_path_sources(tmp_path, running_tables, cache_home):
    raw = tmp_path / "vmlinux.btf"
    raw.write_bytes(VMLINUX_BTF.read_bytes())
    release = os.uname().release
    from_file = btf.kernel_types(raw, use_cache=False)
    assert from_file.fields == btf.kernel_types("btf", use_cache=False).fields
    table = vendored.table_path(release, os.uname().machine, running_tables)
    assert btf.kernel_types(table).fields == from_file.fields


@needs_btf
def test_offsetof_cli_hook(tmp_path):
    loc = btf.offsetof("tcp_sock", "srtt_us")
    assert str(loc).startswith("tcp_sock.srtt_us: offset ")
    assert loc.as_dict()["size"] == 4
    raw = tmp_path / "vmlinux.btf"
    raw.write_bytes(VMLINUX_BTF.read_bytes())
    assert btf.offsetof("tcp_sock", "srtt_us", btf=raw) == loc
    assert str(btf.func_signature("tcp_connect")).startswith("int tcp_connect(struct sock *sk)")


@needs_btf
def test_manifest_required_fields_missing_is_one_clear_error(monkeypatch):
    from gespann.btf import manifest, resolve

    bogus = FIELDS[0]._replace(path="skc_no_such_field")
    monkeypatch.setattr(resolve, "FIELDS", (bogus, *FIELDS))
    with pytest.raises(btf.FieldNotFound, match="lacks fields gespann requires: sock_common.skc_no_such_field"):
        resolve_manifest(btf.load_vmlinux())
    assert manifest.digest() == manifest.digest()
