"""Counting programs for the attach-mode tests, written in the asm DSL, and what every such test shares.

Each program finds a `struct sock *` where its attach point keeps one (a
kprobe's saved registers, the u64 arguments of fentry, fexit and raw
tracepoints), keeps only sockets with
the test's port at either end, and counts into the ArrayMap "counts". Ports
are read with bpf_probe_read_kernel at offsets from gespann.btf, as the
tracepoint reports them: inet_sport (kept after a closing socket gives its
port up) and skc_dport, both network order.
"""
import json
import os
import socket
import subprocess
from typing import Callable

import pytest
from kernel_features import require  # noqa: F401 - re-exported for the attach tests
from loopback import wait_for

from asm import DW, R0, R1, R2, R3, R6, R7, R10, H, Program, Register, Slot, W
from gespann import btf
from gespann.bpf import kprobes
from gespann.probes.toolkit.map_calls import emit_increment

BPFTOOL = "/usr/sbin/bpftool"
CONNECTIONS = 3

LoadSock = Callable[[Program], None]  # emits R6 = the struct sock * (or 0), from the context in R1


def emit_port_filter(p: Program, sk: Register, port: int, skip: str) -> None:
    """Fall through for a socket at `sk` (R6-R9: kept across calls) with `port` at either end;
    jump to `skip` otherwise, and for a NULL socket."""
    types = btf.kernel_types()
    on_port = p.new_label("on_port")
    p.jeq(sk, 0, skip)
    with p.frame.scope():
        scratch = p.frame.alloc("port", size=8)  # probe_read_kernel's destination
        for field in ("inet_sock.inet_sport", "sock_common.skc_dport"):
            location = types.field(field)
            p.mov(R1, R10)
            p.add(R1, scratch.at())
            p.mov(R2, location.size)
            p.mov(R3, sk)
            p.add(R3, location.offset)
            p.call("probe_read_kernel")
            p.jne(R0, 0, skip)
            p.ldx(H, R1, R10, scratch.at())
            p.jeq(R1, socket.htons(port), on_port)
    p.ja(skip)
    p.label(on_port)


def count_sockets_on_port(name: str, load_sock: LoadSock, port: int) -> Program:
    """counts[0] += 1 for each event whose socket has `port` at either end."""
    p = Program(name)
    load_sock(p)
    emit_port_filter(p, R6, port, "out")
    key = p.frame.alloc("key", size=4)
    p.st(W, R10, key.at(), 0)
    _count_and_return(p, key)
    return p


def count_transitions_on_port(name: str, port: int) -> Program:
    """counts[newstate] += 1 on inet_sock_set_state(sk, oldstate, newstate), from its raw u64 arguments
    (a raw tracepoint's or a tp_btf program's context)."""
    p = Program(name)
    p.ldx(DW, R6, R1, 0)
    p.ldx(DW, R7, R1, 16)
    emit_port_filter(p, R6, port, "out")
    key = p.frame.alloc("key", size=4)
    p.stx(W, R10, key.at(), R7)
    _count_and_return(p, key)
    return p


def _count_and_return(p: Program, key: Slot) -> None:
    emit_increment(p, "counts", key)
    p.label("out")
    p.mov(R0, 0)
    p.exit()


def u64_argument(n: int) -> LoadSock:
    """R6 = argument `n` of a fentry/fexit/raw tracepoint context (u64 each; fexit's return value
    follows the arguments)."""
    return lambda p: p.ldx(DW, R6, R1, 8 * n)


def our_kprobe_events() -> list[str]:
    """Lines of tracefs kprobe_events this process made (and should have removed)."""
    path = kprobes.kprobe_events_path()
    if not os.path.exists(path):
        return []
    with open(path) as events:
        return [line for line in events if f"{kprobes.EVENT_PREFIX}_{os.getpid()}_" in line]


def loaded_test_objects() -> set[str]:
    """Programs and maps the tests made (named gt_*) that are still in the kernel, bpftool as the oracle."""
    if not os.path.exists(BPFTOOL):
        return set()
    names = set()
    for kind in ("prog", "map"):
        listing = json.loads(subprocess.run([BPFTOOL, "-j", kind, "list"], check=True, capture_output=True,
                                            text=True).stdout or "[]")
        names |= {f"{kind} {entry['name']}" for entry in listing if entry.get("name", "").startswith("gt_")}
    return names


@pytest.fixture
def leaves_nothing_behind():
    """After the test, no program or map of the tests stays in the kernel and no kprobe event of this
    process in tracefs. The kernel frees them after an RCU grace period, so wait for that."""
    yield
    assert our_kprobe_events() == []
    wait_for(lambda: not loaded_test_objects())
    assert loaded_test_objects() == set()
