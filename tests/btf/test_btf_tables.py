"""Every committed vendored table matches the BTF of the kernel it was generated from.

Debian kernels are fetched with tools/debian_kernels.py and kept under
$GESPANN_TEST_KERNELS (default /srv/gespann-test/kernels), so reruns
touch no network. Their module BTF (split on vmlinux) is checked against
bpftool too, since this machine's kernel has no modules.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import random
import sys
from pathlib import Path

import pytest
from btf_oracle import check_composites, dump, name, reachable_fields

from gespann.btf import vendored
from gespann.btf.elf import section
from gespann.btf.fieldpath import parse_path
from gespann.btf.resolve import resolve_manifest
from gespann.btf.sources import VMLINUX_BTF, load_bytes

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tools")]
import debian_kernels  # noqa: E402
import vmlinux_tables  # noqa: E402

KERNELS = Path(os.environ.get("GESPANN_TEST_KERNELS", "/srv/gespann-test/kernels"))
TABLES = vendored.available()
DEBIAN = [(m, r) for m, r in TABLES if r.endswith("-amd64")]
MODULES = ["net/ipv4/tcp_bbr.ko", "net/netfilter/nf_conntrack.ko"]


def test_tables_cover_debian_series():
    series = {vendored.series_and_flavour(r)[0] for _, r in DEBIAN}
    assert {"5.10", "6.1", "6.12"} <= series


@pytest.fixture(scope="module")
def debian_btf():
    """release -> (vmlinux BTF bytes, KernelPackage), fetched on first use."""
    cache = {}

    def get(release: str):
        if release not in cache:
            series = vendored.series_and_flavour(release)[0]
            try:
                kernel = debian_kernels.fetch_kernel(series, KERNELS, release=release)
            except debian_kernels.DebianKernelError as err:
                pytest.skip(f"cannot fetch {release} ({err}); regenerate: tools/vmlinux_tables.py debian {series}")
            cache[release] = vmlinux_tables.btf_from_file(kernel.vmlinuz_path), kernel
        return cache[release]

    return get


@pytest.mark.parametrize("machine, release", TABLES, ids=[r for _, r in TABLES])
def test_table_matches_its_kernel(machine, release, debian_btf, tmp_path):
    table = vendored.load_table(vendored.table_path(release, machine))
    doc_sha = json.loads(vendored.table_path(release, machine).read_text())["btf_sha256"]
    if (machine, release) in DEBIAN:
        blob, _ = debian_btf(release)
    elif release == os.uname().release and VMLINUX_BTF.exists():
        blob = VMLINUX_BTF.read_bytes()
    else:
        pytest.skip(f"no BTF source known for {release} on this machine")
    assert hashlib.sha256(blob).hexdigest() == doc_sha, "the table was generated from another build"
    spec = load_bytes(blob, name=release)
    assert table.fields == resolve_manifest(spec, release=release, machine=machine, attach=False).fields
    # And independently of the resolver, against bpftool, for plain (unindexed, single-level) fields.
    raw = tmp_path / "vmlinux.btf"
    raw.write_bytes(blob)
    oracle = dump(str(raw))
    by_name = {}
    for t in oracle.values():
        if t["kind"] in ("STRUCT", "UNION") and name(t):
            by_name.setdefault(name(t), t)
    for key, location in table.fields.items():
        struct, _, path = key.partition(".")
        steps = parse_path(path)
        if location is None or len(steps) > 1 or steps[0][1]:
            continue
        fields = {f: (bits, size) for f, bits, size, _ in reachable_fields(oracle, by_name[struct])}
        assert (location.bit_offset, location.bit_size) == fields[steps[0][0]], key


@pytest.mark.parametrize("module", MODULES)
def test_debian_module_split_btf_matches_bpftool(module, debian_btf, tmp_path):
    releases = [r for _, r in DEBIAN if r.startswith("6.1.")]
    if not releases:
        pytest.skip("no Debian 6.1 table")
    blob, kernel = debian_btf(releases[0])
    path = kernel.modules_dir / "kernel" / module
    data = path.read_bytes() if path.exists() else lzma.decompress(Path(f"{path}.xz").read_bytes())
    base_file = tmp_path / "vmlinux.btf"
    base_file.write_bytes(blob)
    module_file = tmp_path / "module.btf"
    module_file.write_bytes(section(data, ".BTF"))
    base = load_bytes(blob, name="vmlinux")
    spec = load_bytes(data, base=base, name=module)
    oracle = {**dump(str(base_file)), **dump(str(module_file), str(base_file))}  # -B dumps only split types
    own = [i for i in oracle if i >= spec.first_id]
    assert own and len(spec) == max(oracle) + 1
    for type_id in own:
        assert spec.kind_of(type_id).name == oracle[type_id]["kind"] and spec.name_of(type_id) == name(oracle[type_id])
    composites = [i for i in own if oracle[i]["kind"] in ("STRUCT", "UNION") and oracle[i]["members"]]
    assert check_composites(spec, oracle, random.Random(7).sample(composites, min(60, len(composites)))) > 0
