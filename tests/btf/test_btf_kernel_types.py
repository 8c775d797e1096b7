"""kernel_types(): BTF, the disk cache, vendored tables and their selection, and the CLI hook."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gespann import btf
from gespann.btf import KernelTypes, NoKernelTypes, kernel, vendored
from gespann.btf.manifest import FIELDS
from gespann.btf.resolve import resolve_manifest
from gespann.btf.sources import VMLINUX_BTF

needs_btf = pytest.mark.skipif(not VMLINUX_BTF.exists(), reason="kernel has no /sys/kernel/btf/vmlinux")


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "gespann"


@pytest.fixture
def running_tables(running_kernel_tables) -> Path:
    """A tables directory holding a table made now from this kernel's BTF (tests/conftest.py)."""
    return running_kernel_tables


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


def test_cache_key_tells_apart_blobs_of_one_length_and_the_labels(tmp_path):
    """Two kernel builds' BTF of the same size differ somewhere: any byte, anywhere, changes the key."""
    from gespann.btf.cache import cache_key

    blob = bytes(range(256)) * 9000  # longer than one read chunk
    path = tmp_path / "vmlinux"
    path.write_bytes(blob)
    key = cache_key(path, "6.1.0-1", "x86_64")
    assert key == cache_key(path, "6.1.0-1", "x86_64")
    assert key != cache_key(path, "6.1.0-2", "x86_64") != cache_key(path, "6.1.0-1", "aarch64")
    for where in (0, 1 << 20, len(blob) - 1):
        changed = bytearray(blob)
        changed[where] ^= 1
        path.write_bytes(bytes(changed))
        assert cache_key(path, "6.1.0-1", "x86_64") != key, where
    swapped = bytearray(blob)  # a checksum blind to order would miss this one
    swapped[10], swapped[20] = swapped[20], swapped[10]
    path.write_bytes(bytes(swapped))
    assert cache_key(path, "6.1.0-1", "x86_64") != key


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
def test_auto_falls_back_to_a_table_without_btf(running_tables, monkeypatch):
    monkeypatch.setattr(kernel, "kernel_has_btf", lambda: False)
    assert btf.kernel_types(tables=running_tables).source.startswith("vendored table")


def test_no_btf_and_no_table_names_the_generating_command(tmp_path, monkeypatch):
    monkeypatch.setattr(kernel, "kernel_has_btf", lambda: False)
    with pytest.raises(NoKernelTypes) as raised:
        btf.kernel_types(release="4.19.0-99-amd64", machine="x86_64", tables=tmp_path)
    message = str(raised.value)
    assert "\n" not in message
    assert (f"tools/vmlinux_tables.py --out {tmp_path} file /boot/vmlinuz-4.19.0-99-amd64 "
            "--release 4.19.0-99-amd64 --machine x86_64") in message
    assert "exposes no BTF at /sys/kernel/btf/vmlinux" in message and "nearest" not in message


def test_vendored_asked_for_on_a_kernel_with_btf_says_so(tmp_path, monkeypatch):
    """Forcing btf.source vendored where the kernel has BTF: no claim that the kernel lacks BTF, and the
    command that makes a table from the kernel's own BTF."""
    monkeypatch.setattr(kernel, "kernel_has_btf", lambda: True)
    _table(tmp_path, "6.1.0-56-amd64")
    with pytest.raises(NoKernelTypes) as raised:
        btf.kernel_types("vendored", release="6.1.0-57-amd64", machine="x86_64", tables=tmp_path)
    message = str(raised.value)
    assert "\n" not in message and "exposes no BTF" not in message
    assert message.startswith(f"btf.source 'vendored' was asked for, but {tmp_path} holds no table for kernel "
                              "6.1.0-57-amd64 (x86_64)")
    assert f"python3 tools/vmlinux_tables.py --out {tmp_path} running" in message
    assert "the nearest, 6.1.0-56-amd64, is another build" in message


def _table(directory: Path, release: str, machine: str = "x86_64") -> None:
    types = KernelTypes(release, machine, True, "test", {ref.key: None for ref in FIELDS})
    path = vendored.table_path(release, machine, directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(types.to_json(attach=False))


def test_only_the_exact_build_is_used_and_the_nearest_is_named(tmp_path, monkeypatch):
    """Another build of the same series is refused, never used silently: the error names the nearest
    table (same flavour first, then the nearest build, older first), and the path that uses it knowingly."""
    monkeypatch.setattr(kernel, "kernel_has_btf", lambda: False)
    for release in ("6.1.0-30-amd64", "6.1.0-37-amd64", "6.1.0-37-cloud-amd64", "6.12.5+deb13-amd64"):
        _table(tmp_path, release)
    choose = vendored.choose_table
    assert choose("6.1.0-37-amd64", "x86_64", tmp_path).stem == "6.1.0-37-amd64"
    assert btf.kernel_types(release="6.1.0-37-amd64", machine="x86_64", tables=tmp_path).release == "6.1.0-37-amd64"
    nearest = {
        "6.1.0-38-amd64": "6.1.0-37-amd64",  # nearest older
        "6.1.0-20-amd64": "6.1.0-30-amd64",  # nearest newer, when none is older
        "6.1.0-40-cloud-amd64": "6.1.0-37-cloud-amd64",  # the same flavour first
        "6.1.0-38-rt-amd64": "6.1.0-37-amd64",  # another flavour: named, and refused like the rest
    }
    for release, near in nearest.items():
        with pytest.raises(NoKernelTypes) as raised:
            btf.kernel_types(release=release, machine="x86_64", tables=tmp_path)
        message = str(raised.value)
        assert f"the nearest, {near}, is another build" in message, release
        assert f"name it as btf.source: {vendored.table_path(near, 'x86_64', tmp_path)}" in message
    for release, machine in (("5.10.0-1-amd64", "x86_64"), ("6.1.0-37-amd64", "aarch64")):
        with pytest.raises(NoKernelTypes) as raised:
            choose(release, machine, tmp_path)
        assert "nearest" not in str(raised.value)
    # Named explicitly, the near table is used: the user's choice, not gespann's.
    explicit = btf.kernel_types(vendored.table_path("6.1.0-37-amd64", "x86_64", tmp_path), release="6.1.0-38-amd64")
    assert explicit.release == "6.1.0-37-amd64" and explicit.source.startswith("vendored table")


def test_json_round_trip_and_stale_documents():
    location = btf.FieldLocation("sock", "sk_protocol", 516, 4, 4136, 8, "unsigned int")
    signature = btf.FuncSignature("f", 7, "int", (btf.FuncParam("sk", "struct sock *"),))
    types = KernelTypes("r", "x86_64", True, "test", {"sock.sk_protocol": location}, {"f": signature, "g": None},
                        {"t": 3})
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
