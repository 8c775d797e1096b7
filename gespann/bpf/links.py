"""Attaching programs to kernel events; a Link detaches when closed.

Each kind of program has its ways in. The default is the newest the kernel
offers, bpf_link first as libbpf orders them, and `mode` forces any other:

  tracepoint       perf event of the tracepoint's id; bpf_link (5.15+) or the SET_BPF ioctl
  kprobe           perf event made by the kprobe PMU (4.17+) or in tracefs kprobe_events
                   (`source`); then bpf_link (5.15+) or the ioctl
  raw tracepoint   BPF_RAW_TRACEPOINT_OPEN by name (4.17+)
  fentry, fexit,   the BTF target the program was loaded for: BPF_LINK_CREATE (5.19+) or
  tp_btf           BPF_RAW_TRACEPOINT_OPEN without a name (5.5+)

Every attachment ends when its fds close, so nothing stays attached after the
process exits; a kprobe made in tracefs is removed by `Link.close()`.
"""
from __future__ import annotations

import enum
import errno
import os
from typing import Optional

from . import features, kprobes, perf_event, syscall, tracefs
from .errors import BPFError, FeatureUnsupportedError, TracepointNotFoundError
from .fd import Closable, Fd
from .perf_event import PerfEventAttr
from .programs import TRAMPOLINE_ATTACH_TYPES, LoadedProgram
from .syscall import AttachType, ProgType


class AttachMode(enum.Enum):
    """How a program is attached."""
    LINK = "bpf_link"                       # BPF_LINK_CREATE: on a perf event (5.15+), a BTF target (5.19+)
    PERF_IOCTL = "perf_event_ioctl"         # PERF_EVENT_IOC_SET_BPF + PERF_EVENT_IOC_ENABLE
    RAW_TRACEPOINT = "raw_tracepoint_open"  # BPF_RAW_TRACEPOINT_OPEN: by name (4.17+), a BTF target (5.5+)


class KprobeSource(enum.Enum):
    """What makes a kprobe's perf event."""
    PMU = "pmu"          # perf_event_open with the kprobe PMU (4.17+): the kprobe goes with the fd
    TRACEFS = "tracefs"  # a line in tracefs kprobe_events, opened as a tracepoint; removed on close


class Link(Closable):
    """One attachment of a program: `mode` says how it was attached (and `source`, for a kprobe,
    what made its perf event); `close()` detaches.

    The attachment holds the program in the kernel until it closes, even
    after the LoadedProgram is closed.
    """

    def __init__(self, program: LoadedProgram, target: str, mode: AttachMode,
                 link_fd: Optional[Fd] = None, perf_fd: Optional[Fd] = None, *,
                 source: Optional[KprobeSource] = None, event: Optional[Closable] = None):
        self.program_name, self.target, self.mode, self.source = program.name, target, mode, source
        self._link_fd, self._perf_fd, self._event = link_fd, perf_fd, event

    def close(self) -> None:
        try:
            self._detach()
        finally:
            if self._event is not None:
                self._event.close()  # after the perf event that used it

    def _detach(self) -> None:
        if self._link_fd is not None:
            self._link_fd.close()
        if self._perf_fd is not None and not self._perf_fd.closed:
            try:
                if self.mode is AttachMode.PERF_IOCTL:
                    perf_event.perf_event_ioctl(int(self._perf_fd), perf_event.PERF_EVENT_IOC_DISABLE)
            finally:
                self._perf_fd.close()

    def __repr__(self) -> str:
        how = self.mode.value + (f" on a {self.source.value} kprobe" if self.source else "")
        return f"Link({self.program_name!r} -> {self.target}, {how})"


# --- perf events: tracepoints and kprobes -----------------------------------------------------

def attach_tracepoint(program: LoadedProgram, category: str, name: str,
                      mode: Optional[AttachMode] = None) -> Link:
    """Attach a TRACEPOINT program to `category:name`.

    By default a bpf_link is used where the kernel has one for perf events,
    the ioctl otherwise; `mode` forces either. The program runs for events on
    every CPU although the perf event is opened on CPU 0 only.
    """
    mode = _perf_event_mode(mode)
    tp = tracefs.read_format(category, name)
    attr = PerfEventAttr(type=perf_event.PERF_TYPE_TRACEPOINT, config=tp.id, sample_period=1, wakeup_events=1)
    return _attach_perf_event(program, f"{category}:{name}", mode, perf_event.perf_event_open(attr, pid=-1, cpu=0))


def attach_kprobe(program: LoadedProgram, symbol: str, retprobe: bool = False, offset: int = 0, *,
                  source: Optional[KprobeSource] = None, mode: Optional[AttachMode] = None) -> Link:
    """Attach a KPROBE program to kernel function `symbol`: at its entry (plus `offset` bytes), or
    with `retprobe` where it returns. Its context is the registers (see pt_regs).

    The kprobe is made by the kprobe PMU where the kernel has one, in tracefs
    kprobe_events otherwise; `source` forces either. `mode` chooses the
    attachment as for tracepoints.
    """
    _check_program(program, "attach_kprobe", ProgType.KPROBE)
    if retprobe and offset:
        raise ValueError(f"a kretprobe on {symbol} hooks the function's return: it takes no offset ({offset})")
    source, mode = _kprobe_source(source), _perf_event_mode(mode)
    target = f"{'kretprobe' if retprobe else 'kprobe'}:{symbol}" + (f"+{offset:#x}" if offset else "")
    if source is KprobeSource.PMU:
        return _attach_perf_event(program, target, mode, kprobes.open_pmu_kprobe(symbol, retprobe, offset),
                                  source=source)
    event = kprobes.TracefsKprobe(symbol, retprobe, offset)
    try:
        perf_fd = event.open()
    except BaseException:
        event.close()
        raise
    return _attach_perf_event(program, target, mode, perf_fd, source=source, event=event)


def _perf_event_mode(mode: Optional[AttachMode]) -> AttachMode:
    if mode is None:
        return AttachMode.LINK if features.has_perf_link() else AttachMode.PERF_IOCTL
    if mode not in (AttachMode.LINK, AttachMode.PERF_IOCTL):
        raise ValueError(f"a perf event attaches through {AttachMode.LINK} or {AttachMode.PERF_IOCTL}, not {mode}")
    if mode is AttachMode.LINK and not features.has_perf_link():
        raise FeatureUnsupportedError(features.PERF_LINK.description, features.PERF_LINK.since)
    return mode


def _kprobe_source(source: Optional[KprobeSource]) -> KprobeSource:
    pmu, events = features.kprobe_pmu(), features.kprobe_events()
    if source is None:
        if not (pmu.available or events.available):
            raise FeatureUnsupportedError("kprobes", features.KPROBE_EVENTS_SINCE,
                                          reason=f"{pmu.detail}; {events.detail}")
        return KprobeSource.PMU if pmu.available else KprobeSource.TRACEFS
    (pmu if source is KprobeSource.PMU else events).require()
    return source


def _attach_perf_event(program: LoadedProgram, target: str, mode: AttachMode, perf_fd: Fd, *,
                       source: Optional[KprobeSource] = None, event: Optional[Closable] = None) -> Link:
    """Attach `program` to the perf event `perf_fd`; the Link owns both (and `event`, made for it)."""
    try:
        if mode is AttachMode.LINK:
            link_fd = syscall.bpf_link_create(int(program.fd), int(perf_fd), AttachType.PERF_EVENT)
            return Link(program, target, mode, link_fd, perf_fd, source=source, event=event)
        perf_event.perf_event_ioctl(int(perf_fd), perf_event.PERF_EVENT_IOC_SET_BPF, int(program.fd))
        perf_event.perf_event_ioctl(int(perf_fd), perf_event.PERF_EVENT_IOC_ENABLE)
        return Link(program, target, mode, perf_fd=perf_fd, source=source, event=event)
    except BaseException:
        perf_fd.close()
        if event is not None:
            event.close()
        raise


# --- raw tracepoints and BTF targets ----------------------------------------------------------

def attach_raw_tracepoint(program: LoadedProgram, name: str) -> Link:
    """Attach a RAW_TRACEPOINT program to tracepoint `name` (no category: `inet_sock_set_state`).
    Its context is the tracepoint's raw arguments (u64 each), not the formatted record."""
    try:
        link_fd = syscall.bpf_raw_tracepoint_open(name, int(program.fd))
    except BPFError as e:
        if e.errno == errno.ENOENT:
            raise TracepointNotFoundError("raw_tp", name) from None
        raise
    return Link(program, f"raw_tp:{name}", AttachMode.RAW_TRACEPOINT, link_fd=link_fd)


def attach_fentry(program: LoadedProgram, mode: Optional[AttachMode] = None) -> Link:
    """Attach a fentry program (TRACING, TRACE_FENTRY) to the entry of the kernel function it was
    loaded for. Its context is the function's arguments (u64 each)."""
    return _attach_btf_target(program, AttachType.TRACE_FENTRY, mode)


def attach_fexit(program: LoadedProgram, mode: Optional[AttachMode] = None) -> Link:
    """Attach a fexit program (TRACING, TRACE_FEXIT) to the return of the kernel function it was
    loaded for. Its context is the arguments and then the return value (u64 each)."""
    return _attach_btf_target(program, AttachType.TRACE_FEXIT, mode)


def attach_tp_btf(program: LoadedProgram, mode: Optional[AttachMode] = None) -> Link:
    """Attach a tp_btf program (TRACING, TRACE_RAW_TP) to the tracepoint whose btf_trace_<name>
    typedef it was loaded for. Its context is the raw tracepoint arguments, typed by BTF."""
    return _attach_btf_target(program, AttachType.TRACE_RAW_TP, mode)


_BTF_TARGET_KINDS = {AttachType.TRACE_FENTRY: "fentry", AttachType.TRACE_FEXIT: "fexit",
                     AttachType.TRACE_RAW_TP: "tp_btf"}


def _attach_btf_target(program: LoadedProgram, attach_type: AttachType, mode: Optional[AttachMode]) -> Link:
    kind = _BTF_TARGET_KINDS[attach_type]
    _check_program(program, f"attach_{kind}", ProgType.TRACING, attach_type)
    mode = _btf_target_mode(mode)
    try:
        if mode is AttachMode.LINK:
            link_fd = syscall.bpf_link_create(int(program.fd), 0, attach_type)
        else:
            link_fd = syscall.bpf_raw_tracepoint_open(None, int(program.fd))
    except BPFError as e:
        refusal = None
        if attach_type in TRAMPOLINE_ATTACH_TYPES:
            refusal = features.trampoline_refusal(f"attaching {kind} program {program.name!r}", e)
        if refusal is None:
            raise
        raise refusal from None
    return Link(program, f"{kind}:btf#{program.attach_btf_id}", mode, link_fd=link_fd)


def _btf_target_mode(mode: Optional[AttachMode]) -> AttachMode:
    if mode is None:
        return AttachMode.LINK if features.has_tracing_link() else AttachMode.RAW_TRACEPOINT
    if mode not in (AttachMode.LINK, AttachMode.RAW_TRACEPOINT):
        raise ValueError(f"a BTF target attaches through {AttachMode.LINK} or {AttachMode.RAW_TRACEPOINT}, "
                         f"not {mode}")
    if mode is AttachMode.LINK:
        features.tracing_link().require()
    return mode


def _check_program(program: LoadedProgram, function: str, prog_type: ProgType,
                   attach_type: AttachType = AttachType.NONE) -> None:
    if program.type != prog_type or program.expected_attach_type != attach_type:
        wanted = prog_type.name + (f" with expected_attach_type {attach_type.name}" if attach_type else "")
        raise ValueError(f"{function} takes a {wanted} program; {program.name!r} is {program.type.name}"
                         f" with expected_attach_type {program.expected_attach_type.name}")


# --- iterators -----------------------------------------------------------------------------------

class IteratorLink(Link):
    """An iterator program linked to its kernel object walk (BPF_TRACE_ITER, 5.8+).

    Nothing runs until a pass is made: `run()` opens a new pass (BPF_ITER_CREATE)
    and reads it to the end, which calls the program once per element, then once
    more with a NULL element. It returns what the program wrote with
    bpf_seq_write / bpf_seq_printf. A walk whose scope is a network namespace
    (TCP sockets) walks the one the calling thread is in when the pass is made.
    """

    _CHUNK = 1 << 16

    def run(self) -> bytes:
        fd = syscall.bpf_iter_create(int(self._link_fd))
        try:
            chunks = []
            while True:
                chunk = os.read(int(fd), self._CHUNK)
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
        finally:
            fd.close()


def attach_iterator(program: LoadedProgram, map_fd: Optional[int] = None) -> IteratorLink:
    """Link a TRACING program loaded with expected_attach_type TRACE_ITER (and the BTF id of the
    kernel's `bpf_iter_<target>` function) to its walk; `IteratorLink.run()` makes each pass. A walk of
    one map's elements (bpf_map_elem, bpf_sk_storage_map) names the map by `map_fd`."""
    _check_program(program, "attach_iterator", ProgType.TRACING, AttachType.TRACE_ITER)
    link_fd = syscall.bpf_link_create(int(program.fd), 0, AttachType.TRACE_ITER, iter_map_fd=map_fd)
    return IteratorLink(program, f"iter:btf#{program.attach_btf_id}", AttachMode.LINK, link_fd=link_fd)
