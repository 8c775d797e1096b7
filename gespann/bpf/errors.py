"""Errors a user can act on.

Every failure of the kernel interface surfaces as a `BPFError`; the subclasses
say what to do about it: which capability is missing, which tracepoint or
kernel feature is absent, or what the verifier objected to. No bare OSError
leaves `gespann.bpf`.
"""
from __future__ import annotations

import errno as _errno
import os
from typing import Iterable, Optional

# Capability numbers from include/uapi/linux/capability.h.
CAPABILITIES = {"CAP_DAC_READ_SEARCH": 2, "CAP_SYS_ADMIN": 21, "CAP_SYS_RESOURCE": 24, "CAP_PERFMON": 38,
                "CAP_BPF": 39}
# What CAP_SYS_ADMIN also grants (bpf_capable(), perfmon_capable()); it does not bypass file permissions.
_COVERED_BY_SYS_ADMIN = frozenset({"CAP_BPF", "CAP_PERFMON"})

# The kernel's internal ENOTSUPP leaks out of bpf(); userspace has no name for it.
ENOTSUPP = 524

_VERIFIER_TAIL_LINES = 20


def errno_name(err: int) -> str:
    """`EPERM` for 1, `ENOTSUPP` for 524: the name a user can search for."""
    if err == ENOTSUPP:
        return "ENOTSUPP"
    return _errno.errorcode.get(err, f"errno {err}")


def describe_errno(err: int) -> str:
    """`Operation not permitted (EPERM)`."""
    text = "Operation not supported" if err == ENOTSUPP else os.strerror(err)
    return f"{text} ({errno_name(err)})"


class BPFError(Exception):
    """Base of every error raised by gespann.bpf; `errno` is set when a system call failed."""

    def __init__(self, message: str, errno: Optional[int] = None):
        super().__init__(message)
        self.errno = errno


def effective_capabilities(status_path: str = "/proc/self/status") -> Optional[set[str]]:
    """The capabilities in CAPABILITIES this process holds (CapEff), or None if unreadable."""
    try:
        with open(status_path) as status:
            for line in status:
                if line.startswith("CapEff:"):
                    mask = int(line.split()[1], 16)
                    return {name for name, bit in CAPABILITIES.items() if mask >> bit & 1}
    except (OSError, ValueError, IndexError):
        pass
    return None


def missing_capabilities(needs: Iterable[str], held: Optional[set[str]]) -> Optional[list[str]]:
    """Which of `needs` the process lacks; CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON,
    as bpf_capable() and perfmon_capable() do in the kernel. None if `held` is unknown."""
    if held is None:
        return None
    return [cap for cap in needs
            if cap not in held and not (cap in _COVERED_BY_SYS_ADMIN and "CAP_SYS_ADMIN" in held)]


class PermissionDeniedError(BPFError):
    """The kernel said EPERM or EACCES; the message names the capability to grant.
    `note` says what else would do (default, for CAP_BPF and CAP_PERFMON: CAP_SYS_ADMIN)."""

    def __init__(self, operation: str, needs: tuple[str, ...], errno: int,
                 held: Optional[set[str]] = None, note: Optional[str] = None):
        held = effective_capabilities() if held is None else held
        self.operation, self.needs = operation, needs
        self.missing = missing_capabilities(needs, held)
        required = " and ".join(needs)
        if note is None and set(needs) <= _COVERED_BY_SYS_ADMIN:
            note = "kernel 5.8+; or CAP_SYS_ADMIN; root has all"
        if note:
            required += f" ({note})"
        if self.missing:
            verdict = f"this process lacks {', '.join(self.missing)}"
        elif self.missing == []:
            verdict = ("this process holds them, so something else refused it: "
                       "kernel lockdown, an LSM, seccomp, or a kernel that does not allow this here")
        else:
            verdict = "this process's capabilities could not be read"
        super().__init__(f"{operation}: {describe_errno(errno)}; needs {required}; {verdict}", errno)


class TracepointNotFoundError(BPFError):
    """The kernel has no such tracepoint; the message names it and the kernel release."""

    def __init__(self, category: str, name: str, detail: str = ""):
        self.category, self.name, self.release = category, name, os.uname().release
        suffix = f" ({detail})" if detail else ""
        super().__init__(f"tracepoint {category}:{name} does not exist on kernel {self.release}{suffix}",
                         _errno.ENOENT)


class FeatureUnsupportedError(BPFError):
    """The running kernel lacks a feature; the message names it, the release that added it, and
    `reason`, what showed it missing (a kernel can lack a feature its release has: a config option,
    an architecture, a policy)."""

    def __init__(self, feature: str, since: str, errno: Optional[int] = None, reason: str = ""):
        self.feature, self.since, self.reason, self.release = feature, since, reason, os.uname().release
        suffix = f": {reason}" if reason else ""
        super().__init__(f"kernel {self.release} does not support {feature} (added in Linux {since}){suffix}",
                         errno)


class SymbolNotFoundError(BPFError):
    """A kernel function cannot be probed: it is not in the kernel's symbol table, or not uniquely."""

    def __init__(self, symbol: str, errno: int, detail: str = ""):
        self.symbol, self.release = symbol, os.uname().release
        suffix = f" ({detail})" if detail else ""
        super().__init__(f"kernel function {symbol} cannot be probed on kernel {self.release}: "
                         f"{describe_errno(errno)}{suffix}", errno)


class VerifierError(BPFError):
    """The verifier rejected a program. `log` holds its full output; the message ends with its tail."""

    def __init__(self, program: str, errno: int, log: str):
        self.program, self.log = program, log
        tail = "\n".join(log.rstrip("\n").splitlines()[-_VERIFIER_TAIL_LINES:])
        super().__init__(
            f"the verifier rejected program {program!r}: {describe_errno(errno)}\n"
            f"verifier log (last {_VERIFIER_TAIL_LINES} lines, full log in .log):\n{tail}", errno)


class KeyNotFoundError(BPFError, KeyError):
    """A map has no element with this key (ENOENT); also a KeyError, as for a dict."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class MemoryLimitError(BPFError):
    """The kernel could not allocate memory for a map or program (ENOMEM). Since 5.11 it charges them to the
    memory cgroup of the process that creates them: the message names that cgroup's limit and its value (or
    says none was found), and `sizing`, the settings that size the maps."""

    def __init__(self, cause: BPFError, sizing: str, limit: Optional[tuple[str, int, int]] = None):
        self.limit = memory_cgroup_limit() if limit is None else limit
        if self.limit:
            path, allowed, used = self.limit
            where = (f"the kernel charges BPF maps to the memory cgroup (Linux 5.11+), and {path} allows "
                     f"{_mebibytes(allowed)}, {_mebibytes(used)} in use; raise that limit, or lower {sizing}")
        else:
            where = f"no memory cgroup limits this process, so the host is short of memory; lower {sizing}"
        super().__init__(f"{cause}; {where}", cause.errno)


def _mebibytes(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


#: A v1 memory cgroup "without limit" reads PAGE_COUNTER_MAX pages, about 2**63 bytes.
_UNLIMITED = 1 << 62


def memory_cgroup_limit(proc_cgroup: str = "/proc/self/cgroup",
                        root: str = "/sys/fs/cgroup") -> Optional[tuple[str, int, int]]:
    """(limit file, bytes allowed, bytes in use) of the tightest memory limit on this process's cgroup and
    its ancestors (cgroup v2 memory.max, or v1 memory.limit_in_bytes); None if none limits it or the files
    cannot be read."""
    try:
        with open(proc_cgroup) as cgroups:
            lines = [line.rstrip("\n").split(":", 2) for line in cgroups]
    except OSError:
        return None
    candidates = []
    for _, controllers, path in lines:
        if controllers == "":  # v2: memory.max, where the memory controller is enabled
            candidates += [(f"{base}{path}", "memory.max", "memory.current")
                           for base in (root, f"{root}/unified")]
        elif "memory" in controllers.split(","):
            candidates.append((f"{root}/memory{path}", "memory.limit_in_bytes", "memory.usage_in_bytes"))
    tightest = None
    for directory, limit_file, usage_file in candidates:
        while directory.startswith(root):
            try:
                with open(f"{directory}/{limit_file}") as limit, open(f"{directory}/{usage_file}") as usage:
                    allowed, used = limit.read().strip(), int(usage.read())
                if allowed != "max" and int(allowed) < _UNLIMITED and (tightest is None or int(allowed) < tightest[1]):
                    tightest = (f"{directory}/{limit_file}", int(allowed), used)
            except (OSError, ValueError):
                pass
            directory = directory.rsplit("/", 1)[0]
    return tightest
