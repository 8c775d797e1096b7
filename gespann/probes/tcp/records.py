"""The record of one ended connection, and the code that fills it: sent only when something asks.

Metrics never need records: the kernel aggregates them. A record per
connection costs a ring-buffer write per end, so probes build the code for it
only when their `BuildTarget` carries an `RecordChannel` (gespann trace, or an
event exporter in the config). The layout is the contract between the probe
that writes a record and the collector that decodes it.

Who a connection belongs to. The process is read with the current-task
helpers, so only where the kernel runs in the process's own context: a
client's SYN_SENT (connect()), and for a server the first of FIN_WAIT1 or
LAST_ACK (close() or shutdown()). A server's ESTABLISHED runs in softirq, on
behalf of whichever task happened to be on the CPU, so it cannot name the
accepting process. The cgroup is the task's cgroup-v2 id.
"""

from __future__ import annotations

import functools
import socket
import sys
from socket import ntohs
from typing import Callable, Optional, Union

from asm import DW, R0, R1, R2, R10, H, Program, Record, Register, Slot, W, array, u8, u16, u32, u64

from ...btf import KernelTypes
from ...figures import ConnectionEvent
from ...vocabulary import CLOSE, FAILED, OUTCOMES, RESET, RESET_DIRECTIONS, ROLES, name_of  # noqa: F401
from ..drops.reasons import DropReasons
from ..toolkit.kernel_memory import emit_read_bytes, emit_read_field
from ..toolkit.probe import BuildTarget, RecordDecoder
from ..toolkit.record_codec import RecordCodec

#: What ended the connection; `reason` qualifies it.

AF_INET, AF_INET6 = 2, 10

RECORD = Record("connection_record", [
    ("end_ns", u64),  # CLOCK_MONOTONIC (ktime_get_ns) of the end
    ("duration_ns", u64),  # established to end; for a failed open, SYN_SENT to end
    ("bytes_sent", u64),  # payload, exact
    ("bytes_received", u64),
    ("cgroup_id", u64),
    # 8-aligned, so that they copy as whole words
    ("local_address", array(u8, 16)),  # IPv4 in the first 4 bytes
    ("remote_address", array(u8, 16)),
    ("comm", array(u8, 16)),
    ("pid", u32),  # thread-group id: the process, as ps shows it
    ("srtt_us", u32),  # smoothed RTT at the end
    ("retransmits", u32),
    ("drops", u32),  # its packets the kernel dropped (counted where dropped packets are), and the reason of the latest
    ("drop_reason", u32),
    ("family", u16),  # AF_INET or AF_INET6
    ("local_port", u16),  # host order
    ("remote_port", u16),  # network order
    ("reason", u16),  # reset: index in RESET_DIRECTIONS; failed: errno (0: abandoned before any answer)
    ("role", u8),  # index in ROLES
    ("outcome", u8),  # index in OUTCOMES
    ("preexisting", u8),  # 1: open before gespann started (adopted); its bytes are those since the start
    # The backend a destination NAT sent it to (tcp_nat, with labels.peers), IPv4; port 0: none seen.
    ("backend_port", u16),  # network order
    ("backend_address", u32),  # the address's bytes, as they are in memory (network order)
])

#: The process fields a connection entry keeps, where records can find them.
PROCESS_FIELDS = ("pid", "cgroup_id", "comm")


def _place(where: Union[Register, Slot], record: Record, field: str) -> tuple[Register, int]:
    """Base register and offset of a `record` field: in a stack slot, or at a register's address."""
    if isinstance(where, Slot):
        return R10, where.at(field)
    return where, record.offset(field)


def emit_capture_process(p: Program, entry: Union[Register, Slot], record: Record) -> None:
    """Write the current task's pid, comm and cgroup id into the `record` in stack slot `entry`, or at
    the address in `entry`, a callee-saved register holding a map value. Clobbers R0-R3.
    """
    p.call("get_current_pid_tgid")
    p.rsh(R0, 32)
    p.stx(W, *_place(entry, record, "pid"), R0)
    p.call("get_current_cgroup_id")
    p.stx(DW, *_place(entry, record, "cgroup_id"), R0)
    base, comm = _place(entry, record, "comm")
    p.mov(R1, base)
    p.add(R1, comm)
    p.mov(R2, 16)
    p.call("get_current_comm")


def emit_copy_process(p: Program, src: Register, src_record: Record, dst: Slot) -> None:
    """Copy pid, cgroup id and comm from the `src_record` at the address in `src` to the record in stack
    slot `dst`. Clobbers R1.
    """
    p.ldx(W, R1, src, src_record.offset("pid"))
    p.stx(W, R10, dst.at("pid"), R1)
    p.ldx(DW, R1, src, src_record.offset("cgroup_id"))
    p.stx(DW, R10, dst.at("cgroup_id"), R1)
    for offset in (0, 8):
        p.ldx(DW, R1, src, src_record.offset("comm") + offset)
        p.stx(DW, R10, dst.at("comm", offset), R1)


def emit_read_addresses(p: Program, sk: Register, types: KernelTypes, record: Slot, scratch: Slot,
                        direct: bool = False) -> None:
    """Fill the RECORD in stack slot `record` with the socket's family and both addresses.

    IPv4 sockets (and kernels without IPv6) take the 4-byte addresses; IPv6
    sockets the 16-byte ones, v4-mapped included. `direct`: `sk` is BTF-typed
    (see emit_read_field). Clobbers R0-R5.
    """
    emit_read_field(p, R1, sk, types.field("sock_common.skc_family"), scratch, direct)
    p.stx(H, R10, record.at("family"), R1)
    v6_local = types.optional_field("sock_common.skc_v6_rcv_saddr")
    v6_remote = types.optional_field("sock_common.skc_v6_daddr")
    done = p.new_label("addresses.done")
    if v6_local is not None and v6_remote is not None:
        ipv4 = p.new_label("addresses.ipv4")
        p.jne(R1, AF_INET6, ipv4)
        emit_read_bytes(p, sk, v6_local.offset, 16, record.at("local_address"), direct)
        emit_read_bytes(p, sk, v6_remote.offset, 16, record.at("remote_address"), direct)
        p.ja(done)
        p.label(ipv4)
    emit_read_bytes(p, sk, types.field("sock_common.skc_rcv_saddr").offset, 4, record.at("local_address"), direct)
    emit_read_bytes(p, sk, types.field("sock_common.skc_daddr").offset, 4, record.at("remote_address"), direct)
    p.label(done)


@functools.lru_cache(maxsize=4096)
def _ipv4(raw: bytes) -> str:
    """An address as text; cached, since a busy host's records repeat a few peers."""
    return socket.inet_ntop(socket.AF_INET, raw[:4])


@functools.lru_cache(maxsize=4096)
def _ipv6(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6, raw)


@functools.lru_cache(maxsize=1024)
def _comm(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


@functools.lru_cache(maxsize=1024)
def _reason(outcome: int, code: int) -> str:
    if outcome == RESET:
        return name_of(RESET_DIRECTIONS, code, "direction")
    if outcome == FAILED:
        from .metrics import failure_reason  # here, not at import: metrics imports this module

        return failure_reason(code)
    return ""


_CODEC = RecordCodec(RECORD)
#: Unpacks a record's fields in RECORD's order (tests/probes/test_connection_record_decode.py holds decode to it).
_unpack = _CODEC.unpack_from
_event = functools.partial(tuple.__new__, ConnectionEvent)


def decode(data: bytes, clock_offset: float, container_of: Optional[Callable[[int], str]] = None,
           drop_reason: Callable[[int], str] = str) -> ConnectionEvent:
    """One record as an event; `clock_offset` turns the kernel's monotonic clock into wall-clock seconds.

    Trace mode decodes every record, so this is a hot path: the record unpacks
    with struct straight into locals, the event is built positionally (its
    fields in ConnectionEvent's order), and the text that repeats (addresses,
    process names, container ids) comes from caches.
    """
    (end_ns, duration_ns, bytes_sent, bytes_received, cgroup_id, local_address, remote_address, comm, pid, srtt_us,
     retransmits, drops, drop_code, family, local_port, remote_port, reason, role, outcome, preexisting,
     backend_port, backend_address) = _unpack(data)
    address = _ipv6 if family == AF_INET6 else _ipv4
    return _event((
        end_ns / 1e9 + clock_offset,  # timestamp
        "tcp",
        name_of(ROLES, role, "role"),
        name_of(OUTCOMES, outcome, "outcome"),
        _reason(outcome, reason),
        pid,
        _comm(comm),
        address(local_address),
        local_port,
        address(remote_address),
        ntohs(remote_port),
        bytes_sent,
        bytes_received,
        duration_ns / 1e9,  # duration_seconds
        None if outcome == FAILED else srtt_us / 1e6,  # rtt_seconds
        retransmits,
        0,  # datagrams_sent
        0,  # datagrams_received
        cgroup_id,
        container_of(cgroup_id) if container_of is not None and cgroup_id else "",
        preexisting != 0,
        drops,
        drop_reason(drop_code) if drops else "",
        _ipv4(backend_address.to_bytes(4, sys.byteorder)) if backend_port else "",  # backend_address
        ntohs(backend_port),
    ))


def decoder(target: BuildTarget) -> RecordDecoder:
    """The decoder of this probe's records, naming drop reasons from the kernel types `target` was built with."""
    return functools.partial(decode, drop_reason=DropReasons.of_target(lambda: target.kernel_types))
