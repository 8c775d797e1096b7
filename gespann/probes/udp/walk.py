"""The kernel walk of the UDP flow map: what a collection needs of every flow, without copying any out.

A collection counts the open flows by role and the idle ones, and ends the
flows idle past the flow timeout. Where the kernel lets a program iterate over
a map's elements (iter/bpf_map_elem, 5.9+), this walk does that in the kernel:
it counts, and writes out only the keys of the flows to end, which user space
then removes one by one (probes/udp_metrics.py), reading each final figure as it
goes. Where the kernel refuses such iterators (some refuse them to every
process), user space makes the same pass over the map's raw bytes instead.

The times come from user space (`now_ns`, CLOCK_MONOTONIC, bpf_ktime_get_ns's
clock) and ages are compared signed: a flow that sees a datagram during the
walk, after `now_ns`, is young, never ended.
"""

from __future__ import annotations

import functools
import threading
from typing import NamedTuple, Optional

from asm import DW, R0, R1, R2, R3, R6, R7, R8, R9, R10, Program, Record, W, u64

from ...bpf.errors import BPFError, FeatureUnsupportedError, PermissionDeniedError
from ...bpf.fd import Closable
from ...bpf.links import IteratorLink, attach_iterator
from ...bpf.maps import ArrayMap, Map
from ...bpf.programs import LoadedProgram, load_program
from ...bpf.syscall import AttachType, ProgType
from ...btf import KernelTypes
from ..toolkit.map_calls import emit_map_lookup
from ..toolkit.probe import CheckContext, CheckLine, KernelWalk, walk_not_taken
from ..toolkit.record_codec import RecordCodec
from .flows import CLIENT, FLOW, KEY, MAP_NAME, SERVER

#: The walk's inputs (set by user space before each pass) and outputs (zeroed with them).
WALK = Record("udp_walk", [
    ("now_ns", u64),
    ("idle_ns", u64),  # a flow without a datagram for longer is idle
    ("timeout_ns", u64),  # ... and for longer than this, it ends
    ("open_client", u64),
    ("open_server", u64),
    ("idle", u64),
])
WALK_MAP = "udp_walk"
ITERATOR = "bpf_iter_bpf_map_elem"


def walk_map() -> ArrayMap:
    return ArrayMap(RecordCodec(WALK), 1, name="gsp_udp_walk")


def program() -> Program:
    """The iter/bpf_map_elem program over the flow map."""
    p = Program("gsp_udp_walk")
    key = p.frame.alloc("walk key", size=4)
    out, ended, count = p.new_label("out"), p.new_label("ended"), p.new_label("count")
    p.ldx(DW, R6, R1, 0)  # struct bpf_iter__bpf_map_elem: meta, map, key, value (NULL on the last call)
    p.ldx(DW, R7, R1, 16)
    p.ldx(DW, R8, R1, 24)
    p.jeq(R7, 0, out)
    p.jeq(R8, 0, out)
    p.st(W, R10, key.at(), 0)
    emit_map_lookup(p, WALK_MAP, key)
    p.jeq(R0, 0, out)
    p.mov(R9, R0)
    p.ldx(DW, R2, R9, WALK.offset("now_ns"))
    p.ldx(DW, R1, R8, FLOW.offset("last_ns"))
    p.sub(R2, R1)  # its age; negative (signed) if a datagram came after now_ns
    p.ldx(DW, R3, R9, WALK.offset("timeout_ns"))
    p.jsgt(R2, R3, ended)
    p.ldx(W, R1, R8, FLOW.offset("role"))
    p.mov(R3, WALK.offset("open_client"))
    p.jne(R1, SERVER, count)
    p.mov(R3, WALK.offset("open_server"))
    p.label(count)
    p.mov(R1, R9)
    p.add(R1, R3)
    p.mov(R0, 1)
    p.atomic_add(DW, R1, 0, R0)
    p.ldx(DW, R3, R9, WALK.offset("idle_ns"))
    p.jsle(R2, R3, out)
    p.mov(R0, 1)
    p.atomic_add(DW, R9, WALK.offset("idle"), R0)
    p.ja(out)

    p.label(ended)  # its key goes out, for user space to remove it with its final figures
    p.ldx(DW, R1, R6, 0)  # meta->seq
    p.mov(R2, R7)
    p.mov(R3, KEY.size)
    p.call("seq_write")

    p.label(out)
    p.mov(R0, 0)
    p.exit()
    return p


class UdpWalkTotals(NamedTuple):
    open_by_role: tuple[int, int]  # (client, server)
    idle: int
    ended_keys: bytes  # the raw keys of the flows to end, back to back


class UdpWalk(Closable):
    """The walk, loaded and linked over the flow map; `run()` makes one pass."""

    def __init__(self, flows: Map, types: KernelTypes):
        self._lock = threading.Lock()
        self._walk = walk_map()
        try:
            self._program: LoadedProgram = load_program(
                program(), ProgType.TRACING, maps={WALK_MAP: self._walk},
                expected_attach_type=AttachType.TRACE_ITER, attach_btf_id=types.func(ITERATOR).btf_id)
            self._link: IteratorLink = attach_iterator(self._program, int(flows.fd))
        except BaseException:
            self._walk.close()
            raise

    def run(self, now_ns: int, idle_ns: int, timeout_ns: int) -> UdpWalkTotals:
        with self._lock:
            inputs = dict.fromkeys((field.name for field in WALK.fields), 0)
            inputs.update(now_ns=now_ns, idle_ns=idle_ns, timeout_ns=timeout_ns)
            self._walk[0] = inputs
            ended = self._link.run()
            out = self._walk[0]
        return UdpWalkTotals((out.open_client, out.open_server), out.idle, ended)

    def close(self) -> None:
        for resource in (self._link, self._program, self._walk):
            resource.close()


@functools.lru_cache(maxsize=None)
def unavailable_reason(types_source: str = "auto") -> Optional[str]:
    """Why this kernel cannot run the walk (None: it can), tried for real on a throw-away flow map."""
    from ...btf import BTFError, kernel_has_btf, kernel_types
    from .flows import flows_map

    if not kernel_has_btf():
        return "the kernel exposes no BTF (/sys/kernel/btf/vmlinux), which iterators need"
    try:
        types = kernel_types(types_source)
    except BTFError as err:
        return f"no kernel types: {err}"
    if types.funcs.get(ITERATOR) is None:
        return f"the kernel has no iterator over map elements ({ITERATOR}, 5.9+)"
    try:
        with flows_map(1) as flows:
            UdpWalk(flows, types).close()
    except PermissionDeniedError as err:
        if err.missing:
            raise
        return f"the kernel refused an iterator over map elements: {str(err).splitlines()[0]}"
    except (BPFError, KeyError, OSError) as err:
        return f"the kernel refused an iterator over map elements: {str(err).splitlines()[0]}"
    return None


def _attach(attached, target, stack) -> Optional[UdpWalk]:
    """The walk over the flow map, where the kernel runs iterators over map elements."""
    if MAP_NAME not in attached.maps:
        return None
    if target.kernel_types.funcs.get(ITERATOR) is None:
        raise FeatureUnsupportedError(f"iterators over map elements ({ITERATOR})", "5.9",
                                      reason="the kernel's BTF has no such function")
    return stack.enter_context(UdpWalk(attached.maps[MAP_NAME], target.kernel_types))


KERNEL_WALK = KernelWalk(subject="UDP flows", fallback="a pass in user space", since="5.9", attach=_attach)


def _check(context: CheckContext) -> str:
    """The path `gespann run` takes to read the UDP flow map, and why."""
    fallback = "one pass over the flow map in user space, whose cost grows with the flows"
    not_taken = walk_not_taken(context, fallback, unavailable_reason)
    if not_taken is not None:
        return not_taken
    return "kernel walk (iter/bpf_map_elem): counted in the kernel; only ended flows are read out"


CHECK = CheckLine("udp_flows", "udp flows", _check)

__all__ = ["CHECK", "CLIENT", "MAP_NAME", "KERNEL_WALK", "UdpWalk", "UdpWalkTotals", "unavailable_reason"]
