"""A probe from outside the tree names the kernel types it needs beyond gespann's manifest, in its own file.

The probe below is written as an author would, importing only gespann.probes.authoring. It reads a struct
field the manifest does not list (sock.sk_mark) at a tp_btf tracepoint the manifest does not list
(tcp:tcp_rcv_space_adjust, which a TCP receiver fires when it reads), and declares a function it does not
list (tcp_v4_send_reset). The value read is checked against the kernel's own answer (the mark the test set
with SO_MARK), the ids and the offset against bpftool's dump of the kernel's BTF. fentry is refused on this
host, so the function is checked by its resolution, not by attaching.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import subprocess

import pytest
from loopback import wait_for

from gespann.btf.sources import VMLINUX_BTF
from gespann.probes import AttachSettings, ProbeSet, ProbeUnavailable, load_probes

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(not VMLINUX_BTF.exists(), reason="kernel has no /sys/kernel/btf/vmlinux")]

PROBE_SOURCE = '''
"""The socket mark each TCP receiver had when it last read, by local port."""
from gespann.probes.authoring import (
    R0, R1, R7, R10, U32, W, BtfTracepoint, FieldRef, HashMap, KernelNeeds, Probe, UpdateFlags, emit_map_update,
    emit_netns_check, emit_read_field,
)

NEEDS = KernelNeeds(fields=(FieldRef("sock", "sk_mark"),), functions=("tcp_v4_send_reset",),
                    tracepoints=("TRACEPOINT",))


def body(p, args, target):
    port = p.frame.alloc("local port", size=4)
    mark = p.frame.alloc("mark", size=4)
    scratch = p.frame.alloc("read scratch", size=8)
    out = p.new_label("out")
    args.load(p, R7, "sk")
    if target.netns is not None:
        emit_netns_check(p, R7, target.kernel_types, target.netns, out, scratch, args.btf_pointers)
    emit_read_field(p, R1, R7, target.kernel_types.field("sock_common.skc_num"), scratch, args.btf_pointers)
    p.stx(W, R10, port.at(), R1)
    emit_read_field(p, R1, R7, target.kernel_types.field("sock.sk_mark"), scratch, args.btf_pointers)
    p.stx(W, R10, mark.at(), R1)
    emit_map_update(p, "marks", port, mark, UpdateFlags.ANY)
    p.label(out)
    p.mov(R0, 0)
    p.exit()


PROBE = Probe(name="tcp_read_marks", summary="socket marks of TCP receivers, by local port",
              flavours=(BtfTracepoint("TRACEPOINT", ("sk",)),), body=body,
              maps={"marks": lambda: HashMap(U32, U32, 1024, name="gsp_read_marks")}, KERNEL)
'''

TRACEPOINT = "tcp_rcv_space_adjust"
MARK = 0x5EED


def write_probe(tmp_path, name: str, tracepoint: str = TRACEPOINT, kernel: str = "kernel=NEEDS"):
    source = tmp_path / f"{name}.py"
    source.write_text(PROBE_SOURCE.replace("TRACEPOINT", tracepoint).replace("KERNEL", kernel))
    (probe,) = load_probes(str(source))
    return probe


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def receive_with_mark(mark: int) -> int:
    """A loopback connection whose receiving end has SO_MARK `mark` and reads: the receiver's local port."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        with socket.create_connection(listener.getsockname()) as client:
            server, _ = listener.accept()
            with server:
                server.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
                assert server.getsockopt(socket.SOL_SOCKET, socket.SO_MARK) == mark
                client.sendall(b"x" * 4096)
                received = 0
                while received < 4096:
                    received += len(server.recv(4096))
                return server.getsockname()[1]


@functools.lru_cache(maxsize=1)
def bpftool_dump() -> dict[int, dict]:
    """The oracle: bpftool's JSON dump of the kernel's BTF, {id: type}."""
    bpftool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    if not os.path.exists(bpftool):
        pytest.skip("bpftool is not installed (tools/setup-host.sh installs it)")
    out = subprocess.run([bpftool, "-j", "btf", "dump", "file", str(VMLINUX_BTF)], check=True,
                         capture_output=True).stdout
    return {t["id"]: t for t in json.loads(out)["types"]}


def oracle_id(kind: str, name: str) -> int:
    found = [i for i, t in bpftool_dump().items() if t["kind"] == kind and t.get("name") == name]
    assert len(found) == 1, (kind, name, found)
    return found[0]


def oracle_offset(struct: str, member: str) -> int:
    """A member at the top level of the struct (not in an anonymous one): its bit offset / 8."""
    (bits,) = [m["bits_offset"] for m in bpftool_dump()[oracle_id("STRUCT", struct)]["members"]
               if m["name"] == member]
    return bits // 8


def test_an_out_of_tree_probe_reads_a_field_and_attaches_where_the_manifest_does_not_reach(tmp_path, namespace):
    """In a namespace of the test's own, which the probe is scoped to: the host's other receivers stay out."""
    probe = write_probe(tmp_path, "tcp_read_marks")
    with ProbeSet.attach([probe], AttachSettings(btf_source="btf", netns=namespace.inode)) as probes:
        attached = probes["tcp_read_marks"]
        assert str(attached.flavour) == f"tp_btf/{TRACEPOINT}" and not attached.passed_over
        types = attached.target.kernel_types
        assert types.field("sock.sk_mark").offset == oracle_offset("sock", "sk_mark")
        assert types.tracepoint_id(TRACEPOINT) == oracle_id("TYPEDEF", f"btf_trace_{TRACEPOINT}")
        assert types.func("tcp_v4_send_reset").btf_id == oracle_id("FUNC", "tcp_v4_send_reset")
        marks = attached.maps["marks"]
        with namespace.enter():
            ports = {receive_with_mark(MARK + n): MARK + n for n in range(3)}
        wait_for(lambda: len(dict(marks.items())) == len(ports))
        assert dict(marks.items()) == ports


def test_a_name_used_but_not_declared_is_named_with_where_it_exists(tmp_path):
    probe = write_probe(tmp_path, "tcp_read_marks_undeclared", kernel="")
    with pytest.raises(ProbeUnavailable) as refused:
        ProbeSet.attach([probe], AttachSettings(btf_source="btf")).close()
    assert str(refused.value) == (
        f"probe tcp_read_marks cannot attach on this kernel: tp_btf/{TRACEPOINT}: field sock.sk_mark is neither in "
        "gespann's manifest nor declared by a probe (Probe(kernel=KernelNeeds(fields=('sock.sk_mark',)))); the "
        f"kernel's BTF ({VMLINUX_BTF}) has it")


def test_a_declared_tracepoint_the_kernel_lacks_is_blamed_on_the_kernel(tmp_path):
    probe = write_probe(tmp_path, "tcp_no_such_tracepoint", tracepoint="tcp_no_such_tracepoint",
                        kernel="kernel=NEEDS")
    with pytest.raises(ProbeUnavailable) as refused:
        ProbeSet.attach([probe], AttachSettings(btf_source="btf")).close()
    assert (f"tp_btf/tcp_no_such_tracepoint: the kernel's BTF ({VMLINUX_BTF}) has no tracepoint "
            "tcp_no_such_tracepoint") in str(refused.value)


def test_a_vendored_table_says_which_need_it_cannot_offer(tmp_path, running_kernel_tables):
    from gespann.btf.vendored import table_path

    table = table_path(os.uname().release, os.uname().machine, running_kernel_tables)
    probe = write_probe(tmp_path, "tcp_read_marks_vendored")
    with pytest.raises(ProbeUnavailable) as refused:
        ProbeSet.attach([probe], AttachSettings(btf_source=str(table))).close()
    assert str(refused.value) == (
        f"probe tcp_read_marks cannot attach on this kernel: tp_btf/{TRACEPOINT}: probe tcp_read_marks needs field "
        f"sock.sk_mark, which the vendored table for kernel {os.uname().release} ({table}) does not carry (vendored "
        "tables hold gespann's manifest only); this kernel has BTF: set btf.source to auto (or btf) to resolve it "
        "from there")


def test_a_probe_built_alone_is_built_with_its_own_needs(tmp_path):
    """`gespann disasm --config` builds an extra probe without a probe set: its declarations still count."""
    from click.testing import CliRunner

    from gespann.cli import main

    write_probe(tmp_path, "tcp_read_marks_disasm")
    config = tmp_path / "gespann.yaml"
    config.write_text(f"extra_probes:\n  - {tmp_path / 'tcp_read_marks_disasm.py'}\n")
    result = CliRunner().invoke(main, ["disasm", "tcp_read_marks", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"; tcp_read_marks as tp_btf/{TRACEPOINT}\n")
    # The field's load, at the offset bpftool reads: `w1 = *(u32 *)(r7 + OFFSET)`.
    assert f"w1 = *(u32 *)(r7 + {oracle_offset('sock', 'sk_mark'):#x})" in result.output
