"""Probes of what the running kernel supports, each run once and remembered.

Each probe asks the kernel directly instead of comparing version numbers, so
backports and configuration count: a 6.18 kernel built without CONFIG_KPROBES
has no kprobes. A probe returns a `FeatureStatus` that says how it decided,
and the release that added the feature for messages; `report()` gathers them
all for `gespann check`.

The probes load only programs that return 0 at once. Where loading alone
cannot tell (fentry: some kernels load it and then cannot build the
trampoline), they attach to targets that run only under BPF_PROG_TEST_RUN,
bpf_fentry_test1 and the bpf_test_finish tracepoint, and detach at once.
"""
from __future__ import annotations

import ctypes
import errno
import functools
import os
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional

from asm import R0, Program

from . import kprobes, perf_event, syscall, tracefs
from .errors import ENOTSUPP, BPFError, FeatureUnsupportedError, PermissionDeniedError, describe_errno
from .fd import Fd
from .memory import PAGE_SIZE
from .syscall import AttachType, MapType, ProgType

BTF_SINCE = "5.4"
TRACEPOINT_SINCE = "4.7"
PERF_LINK_SINCE = "5.15"
RAW_TRACEPOINT_SINCE = "4.17"
TP_BTF_SINCE = "5.5"
FENTRY_SINCE = "5.5"
TRACING_LINK_SINCE = "5.19"
KPROBE_PMU_SINCE = "4.17"
KPROBE_EVENTS_SINCE = "4.1"  # BPF programs on kprobe events; kprobe_events itself is older
RING_BUFFER_SINCE = "5.8"

#: The helpers gespann's programs call, and the release that added each.
HELPERS_SINCE = {
    "map_lookup_elem": "3.19",
    "ktime_get_ns": "4.1",
    "get_current_pid_tgid": "4.2",
    "perf_event_output": "4.4",
    "get_current_cgroup_id": "4.18",
    "probe_read_kernel": "5.5",
    "ringbuf_output": "5.8",
    "ringbuf_reserve": "5.8",
    "ringbuf_submit": "5.8",
    "ringbuf_discard": "5.8",
}

VMLINUX_BTF = "/sys/kernel/btf/vmlinux"
#: Probe targets that nothing calls outside BPF_PROG_TEST_RUN (net/bpf/test_run.c).
FENTRY_PROBE_FUNC = "bpf_fentry_test1"
PROBE_TRACEPOINT = ("bpf_test_run", "bpf_test_finish")

# r0 = 0; exit
_RETURN_ZERO = bytes.fromhex("b700000000000000" "9500000000000000")
# The verifier's words for a helper it does not know, or not for this program type, old and new.
_UNKNOWN_HELPER = ("invalid func ", "unknown func ", "cannot use helper ")
_PROBE_LOG_SIZE = 64 * 1024


@dataclass(frozen=True)
class FeatureStatus:
    """One probe's verdict: `detail` says what showed the feature present, or why it is missing."""
    name: str
    description: str
    since: str
    available: bool
    detail: str

    def error(self) -> FeatureUnsupportedError:
        """The error to raise where this feature is needed and missing."""
        return FeatureUnsupportedError(self.description, self.since, reason=self.detail)

    def require(self) -> None:
        if not self.available:
            raise self.error()


class Feature(NamedTuple):
    """A feature's name (stable, for programs), description (for people) and the release that added it."""
    name: str
    description: str
    since: str

    def present(self, detail: str) -> FeatureStatus:
        return FeatureStatus(self.name, self.description, self.since, True, detail)

    def missing(self, detail: str) -> FeatureStatus:
        return FeatureStatus(self.name, self.description, self.since, False, detail)


BTF = Feature("btf", "kernel BTF in sysfs", BTF_SINCE)
TRACEPOINT = Feature("tracepoint", "BPF programs on tracepoints (perf_event_open)", TRACEPOINT_SINCE)
PERF_LINK = Feature("perf_link", "bpf_link for perf events", PERF_LINK_SINCE)
RAW_TRACEPOINT = Feature("raw_tracepoint", "raw tracepoints (BPF_RAW_TRACEPOINT_OPEN)", RAW_TRACEPOINT_SINCE)
TP_BTF = Feature("tp_btf", "BTF tracepoints (tp_btf)", TP_BTF_SINCE)
TRACING_LINK = Feature("tracing_link", "bpf_link for fentry, fexit and tp_btf (BPF_LINK_CREATE)",
                       TRACING_LINK_SINCE)
FENTRY = Feature("fentry", "fentry/fexit (BPF trampolines)", FENTRY_SINCE)
KPROBE_PMU = Feature("kprobe_pmu", "kprobes through the kprobe PMU (perf_event_open)", KPROBE_PMU_SINCE)
KPROBE_EVENTS = Feature("kprobe_events", "kprobes through tracefs kprobe_events", KPROBE_EVENTS_SINCE)
RINGBUF = Feature("ringbuf", "BPF ring buffer", RING_BUFFER_SINCE)


def helper_feature(helper: str) -> Feature:
    if helper not in HELPERS_SINCE:
        raise ValueError(f"helper {helper!r} is not in HELPERS_SINCE; add it there with the release that added it")
    return Feature(f"helper:{helper}", f"helper bpf_{helper}", HELPERS_SINCE[helper])


# --- BTF and the attach points built on it --------------------------------------------------

@functools.cache
def btf() -> FeatureStatus:
    """BTF of vmlinux in sysfs (CONFIG_DEBUG_INFO_BTF): what fentry and tp_btf name their targets by."""
    if os.path.exists(VMLINUX_BTF):
        return BTF.present(f"{VMLINUX_BTF} exists")
    return BTF.missing(f"no {VMLINUX_BTF} (a kernel without CONFIG_DEBUG_INFO_BTF)")


@functools.cache
def tp_btf() -> FeatureStatus:
    """A TRACING program of attach type TRACE_RAW_TP loads and attaches to a tracepoint's BTF typedef."""
    if not btf().available:
        return TP_BTF.missing(btf().detail)
    typedef = f"btf_trace_{PROBE_TRACEPOINT[1]}"
    target = _vmlinux_btf_id(tracepoint=PROBE_TRACEPOINT[1])
    if target is None:
        return TP_BTF.missing(f"vmlinux BTF has no {typedef}")
    try:
        with _load_probe(ProgType.TRACING, "probe_tp_btf", AttachType.TRACE_RAW_TP, target) as prog:
            syscall.bpf_raw_tracepoint_open(None, int(prog)).close()
    except BPFError as e:
        _raise_if_not_privileged(e)
        return TP_BTF.missing(f"a tp_btf program for {typedef}: {e}")
    return TP_BTF.present(f"a tp_btf program attached to tracepoint {PROBE_TRACEPOINT[1]}")


@functools.cache
def tracing_link() -> FeatureStatus:
    """BPF_LINK_CREATE takes TRACING programs (5.19); before, they attach with BPF_RAW_TRACEPOINT_OPEN."""
    if not tp_btf().available:
        return TRACING_LINK.missing(f"no tp_btf program to link: {tp_btf().detail}")
    target = _vmlinux_btf_id(tracepoint=PROBE_TRACEPOINT[1])

    def link() -> None:
        with _load_probe(ProgType.TRACING, "probe_tr_link", AttachType.TRACE_RAW_TP, target) as prog:
            syscall.bpf_link_create(int(prog), 0, AttachType.TRACE_RAW_TP).close()

    return _attempt(TRACING_LINK, link, "BPF_LINK_CREATE attached a tp_btf program",
                    "BPF_LINK_CREATE rejects a tp_btf program (EINVAL)")


@functools.cache
def fentry() -> FeatureStatus:
    """A fentry program loads and attaches to bpf_fentry_test1: both, since some kernels load
    fentry programs and only fail to build the trampoline when they attach."""
    if not btf().available:
        return FENTRY.missing(btf().detail)
    target = _vmlinux_btf_id(function=FENTRY_PROBE_FUNC)
    if target is None:
        return FENTRY.missing(f"vmlinux BTF has no {FENTRY_PROBE_FUNC}")
    operation = f"loading a fentry program for {FENTRY_PROBE_FUNC}"
    try:
        with _load_probe(ProgType.TRACING, "probe_fentry", AttachType.TRACE_FENTRY, target) as prog:
            operation = f"attaching a fentry program to {FENTRY_PROBE_FUNC}"
            syscall.bpf_raw_tracepoint_open(None, int(prog)).close()
    except BPFError as e:
        refusal = trampoline_refusal(operation, e)
        if refusal is None:
            raise
        return FENTRY.missing(refusal.reason)
    return FENTRY.present(f"a fentry program attached to {FENTRY_PROBE_FUNC}")


def trampoline_refusal(operation: str, error: BPFError) -> Optional[FeatureUnsupportedError]:
    """The FeatureUnsupportedError for a fentry/fexit load or attach that failed because the kernel
    has no usable BPF trampolines; None if `error` means something else.

    ENOTSUPP: no trampoline for this architecture or target. EPERM while this
    process holds every capability involved: the kernel refuses them (a policy
    or configuration), which no capability would change.
    """
    if error.errno in (ENOTSUPP, errno.EOPNOTSUPP):
        reason = f"{operation} failed with {describe_errno(error.errno)}: the kernel cannot build a BPF trampoline"
    elif isinstance(error, PermissionDeniedError) and error.missing == []:
        reason = (f"{operation} was refused with {describe_errno(error.errno)} although this process has "
                  f"every capability it needs: the kernel does not allow BPF trampolines")
    else:
        return None
    return FeatureUnsupportedError(FENTRY.description, FENTRY.since, error.errno, reason)


@functools.cache
def _kernel_btf_types():
    from gespann.btf import kernel_types
    from gespann.btf.kernel import BTF

    return kernel_types(BTF)


def _vmlinux_btf_id(*, tracepoint: Optional[str] = None, function: Optional[str] = None) -> Optional[int]:
    """The vmlinux BTF id of a tracepoint's btf_trace_ typedef or of a function, None if there is none.

    Both are in the BTF manifest, so a warm start reads them from the kernel-types
    cache instead of parsing the kernel's whole BTF (about 0.1 s and 6 MiB).
    gespann.btf is imported here, by the first probe that needs it.
    """
    types = _kernel_btf_types()
    if tracepoint is not None:
        return types.tracepoints.get(tracepoint)
    found = types.funcs.get(function)
    return found.btf_id if found else None


# --- tracepoints ------------------------------------------------------------------------------

@functools.cache
def tracepoint() -> FeatureStatus:
    """A TRACEPOINT program is set on a tracepoint's perf event (PERF_EVENT_IOC_SET_BPF, 4.7)."""
    category, name = PROBE_TRACEPOINT
    try:
        tp_id = tracefs.read_format(category, name).id
    except FeatureUnsupportedError as e:
        return TRACEPOINT.missing(str(e))
    except BPFError as e:
        if e.errno != errno.ENOENT:
            raise
        return TRACEPOINT.missing(f"no tracepoint {category}:{name} to probe with")
    attr = perf_event.PerfEventAttr(type=perf_event.PERF_TYPE_TRACEPOINT, config=tp_id, sample_period=1)

    def set_program() -> None:
        with _load_probe(ProgType.TRACEPOINT, "probe_tp") as prog, \
                perf_event.perf_event_open(attr, pid=-1, cpu=0) as event:
            perf_event.perf_event_ioctl(int(event), perf_event.PERF_EVENT_IOC_SET_BPF, int(prog))

    return _attempt(TRACEPOINT, set_program, f"a tracepoint program was set on {category}:{name}",
                    "PERF_EVENT_IOC_SET_BPF rejects a tracepoint program (EINVAL)")


@functools.cache
def perf_link() -> FeatureStatus:
    """BPF_LINK_CREATE for perf events (5.15): given no perf event (fd -1), a kernel that knows
    the attach type looks the fd up and says EBADF; an older one rejects the attach type (EINVAL)."""
    def link() -> None:
        with _load_probe(ProgType.TRACEPOINT, "probe_perf_link") as prog:
            _expect(errno.EBADF, syscall.bpf_link_create, int(prog), -1, AttachType.PERF_EVENT)

    return _attempt(PERF_LINK, link, "BPF_LINK_CREATE knows attach type PERF_EVENT (EBADF for fd -1)",
                    "BPF_LINK_CREATE rejects attach type PERF_EVENT (EINVAL)")


@functools.cache
def raw_tracepoint() -> FeatureStatus:
    """RAW_TRACEPOINT programs load, and BPF_RAW_TRACEPOINT_OPEN looks names up: a name that is no
    tracepoint gives ENOENT, so nothing is attached."""
    def open_none() -> None:
        with _load_probe(ProgType.RAW_TRACEPOINT, "probe_raw_tp") as prog:
            _expect(errno.ENOENT, syscall.bpf_raw_tracepoint_open, "gespann_no_such_tracepoint", int(prog))

    return _attempt(RAW_TRACEPOINT, open_none,
                    "BPF_RAW_TRACEPOINT_OPEN looked up a tracepoint name (ENOENT for none)",
                    "the kernel does not load RAW_TRACEPOINT programs (EINVAL)")


# --- kprobes ----------------------------------------------------------------------------------

@functools.cache
def kprobe_pmu() -> FeatureStatus:
    """The kprobe PMU is registered: sysfs lists its perf event type."""
    pmu = kprobes.pmu_type()
    if pmu is None:
        return KPROBE_PMU.missing(f"no {kprobes.PMU_DIR} (a kernel without CONFIG_KPROBES, or before 4.17)")
    return KPROBE_PMU.present(f"perf event type {pmu}")


@functools.cache
def kprobe_events() -> FeatureStatus:
    """tracefs has kprobe_events (CONFIG_KPROBE_EVENTS), where kprobes are made by writing a line."""
    try:
        path = kprobes.kprobe_events_path()
    except FeatureUnsupportedError as e:
        return KPROBE_EVENTS.missing(str(e))
    if os.path.exists(path):
        return KPROBE_EVENTS.present(f"{path} exists")
    return KPROBE_EVENTS.missing(f"no {path} (a kernel without CONFIG_KPROBE_EVENTS)")


# --- maps and helpers -------------------------------------------------------------------------

@functools.cache
def ringbuf() -> FeatureStatus:
    """BPF_MAP_TYPE_RINGBUF (5.8): creating a one-page ring buffer succeeds."""
    def create() -> None:
        syscall.bpf_map_create(MapType.RINGBUF, 0, 0, PAGE_SIZE, name="probe_ringbuf").close()

    return _attempt(RINGBUF, create, "created a one-page ring buffer",
                    "creating a ring buffer map: EINVAL (unknown map type)")


@functools.cache
def helper(name: str, prog_type: ProgType = ProgType.TRACEPOINT) -> FeatureStatus:
    """Helper bpf_<name> for programs of `prog_type`: a program calling it with no arguments set is
    refused for the arguments if the helper exists, and for the call ("unknown func") if not."""
    feature = helper_feature(name)
    p = Program("probe_helper")
    p.call(name)
    p.mov(R0, 0)
    p.exit()
    log = ctypes.create_string_buffer(_PROBE_LOG_SIZE)
    try:
        syscall.bpf_prog_load(prog_type, p.assemble(), name=p.name, log=log).close()
    except BPFError as e:
        _raise_if_not_privileged(e)
        refusal = next((line for line in log.value.decode(errors="replace").splitlines()
                        if any(words in line for words in _UNKNOWN_HELPER)), None)
        if refusal is not None:
            return feature.missing(f"the verifier refuses it in {prog_type.name} programs: {refusal.strip()}")
        if e.errno not in (errno.EINVAL, errno.EACCES):
            raise
    return feature.present(f"the verifier accepts the call in {prog_type.name} programs")


# --- booleans for the attach code -------------------------------------------------------------

def has_btf() -> bool:
    return btf().available


def has_ringbuf() -> bool:
    return ringbuf().available


def has_perf_link() -> bool:
    return perf_link().available


def has_tracing_link() -> bool:
    return tracing_link().available


def has_helper(name: str, prog_type: ProgType = ProgType.TRACEPOINT) -> bool:
    return helper(name, prog_type).available


# --- the report -------------------------------------------------------------------------------

def _probes() -> list[tuple[Feature, Callable[[], FeatureStatus]]]:
    """Every probe with its feature, in the order `gespann check` prints them."""
    probes = [(BTF, btf), (TRACEPOINT, tracepoint), (PERF_LINK, perf_link), (RAW_TRACEPOINT, raw_tracepoint),
              (TP_BTF, tp_btf), (TRACING_LINK, tracing_link), (FENTRY, fentry), (KPROBE_PMU, kprobe_pmu),
              (KPROBE_EVENTS, kprobe_events), (RINGBUF, ringbuf)]
    probes += [(helper_feature(name), functools.partial(helper, name)) for name in HELPERS_SINCE]
    return probes


def report() -> list[FeatureStatus]:
    """The verdict of every probe. A probe that cannot run (without privileges, say) is reported
    unavailable, with the error as its detail, instead of raising."""
    statuses = []
    for feature, probe in _probes():
        try:
            statuses.append(probe())
        except BPFError as e:
            statuses.append(feature.missing(f"could not probe: {e}"))
    return statuses


def _raise_if_not_privileged(error: BPFError) -> None:
    """A probe cannot tell anything without the capabilities it needs: that error goes to the caller."""
    if isinstance(error, PermissionDeniedError) and error.missing != []:
        raise error


def _attempt(feature: Feature, attempt: Callable[[], None], present: str, missing: str) -> FeatureStatus:
    """Run `attempt`: the feature is present if it succeeds and missing if the kernel says EINVAL,
    which is how bpf() answers a command, type or flag it does not know. Other errors are raised."""
    try:
        attempt()
    except BPFError as e:
        if e.errno != errno.EINVAL:
            raise
        return feature.missing(missing)
    return feature.present(present)


def _expect(err: int, call: Callable[..., Fd], *args) -> None:
    """Make a call that is meant to fail with `err`, an answer that shows the kernel understood it."""
    try:
        call(*args).close()
    except BPFError as e:
        if e.errno != err:
            raise


def _load_probe(prog_type: ProgType, name: str, expected_attach_type: AttachType = AttachType.NONE,
                attach_btf_id: int = 0) -> Fd:
    return syscall.bpf_prog_load(prog_type, _RETURN_ZERO, name=name, expected_attach_type=expected_attach_type,
                                 attach_btf_id=attach_btf_id)
