"""Tracefs: where it is, and the layout of a tracepoint's record as the running kernel prints it.

Tracepoint field offsets change between kernels (fields are added, such as
tcp_send_reset's `reason`), so they are always read from
`events/<category>/<name>/format`, never written into code.
"""
from __future__ import annotations

import ctypes
import errno
import functools
import os
import re
from dataclasses import dataclass
from typing import Optional

from .errors import BPFError, FeatureUnsupportedError, PermissionDeniedError, TracepointNotFoundError

MOUNT_POINT = "/sys/kernel/tracing"
_DEBUGFS_MOUNT_POINT = "/sys/kernel/debug/tracing"

_FIELD = re.compile(r"^\s*field:(?P<decl>[^;]*);\s*offset:(?P<offset>\d+);\s*size:(?P<size>\d+);"
                    r"\s*(?:signed:(?P<signed>\d+);)?")
_DECLARATOR = re.compile(r"(?P<name>\w+)\s*(?:\[(?P<length>[^\]]*)\])?\s*$")


@dataclass(frozen=True)
class TracepointField:
    """One field of a tracepoint record. `array_len` is set for `type name[N]`; a `__data_loc`
    field holds a u32 whose low half is the offset and high half the length of variable data."""
    name: str
    type: str
    offset: int
    size: int
    signed: bool
    array_len: Optional[int] = None
    data_loc: bool = False

    @property
    def common(self) -> bool:
        """The header fields every tracepoint record starts with (common_type, common_pid, ...)."""
        return self.name.startswith("common_")

    @property
    def element_size(self) -> int:
        return self.size // self.array_len if self.array_len else self.size


@dataclass(frozen=True)
class TracepointFormat:
    """A tracepoint's id (the perf event config) and record layout."""
    category: str
    name: str
    id: int
    fields: tuple[TracepointField, ...]

    def field(self, name: str) -> TracepointField:
        for field in self.fields:
            if field.name == name:
                return field
        raise BPFError(f"tracepoint {self.category}:{self.name} has no field {name!r} on kernel "
                       f"{os.uname().release}; it has {[f.name for f in self.fields]}")

    def offset(self, name: str) -> int:
        return self.field(name).offset

    @property
    def size(self) -> int:
        """Bytes of the fixed part of the record (variable __data_loc data follows it)."""
        return max(field.offset + field.size for field in self.fields)


def parse_format(text: str, category: str = "", name: str = "") -> TracepointFormat:
    """Parse the text of a `format` file. Category and name default to what the text says."""
    tp_id, fields = None, []
    for line in text.splitlines():
        if line.startswith("name:") and not name:
            name = line.split(":", 1)[1].strip()
        elif line.startswith("ID:"):
            tp_id = int(line.split(":", 1)[1])
        elif match := _FIELD.match(line):
            fields.append(_parse_field(match))
    if tp_id is None or not fields:
        raise BPFError(f"tracepoint {category}:{name}: not a tracefs format file (no ID or no fields)")
    return TracepointFormat(category, name, tp_id, tuple(fields))


def _parse_field(match: re.Match) -> TracepointField:
    decl = match["decl"].strip()
    data_loc = decl.startswith("__data_loc ")
    if data_loc:  # `__data_loc char[] name`: the brackets belong to the type
        decl = decl[len("__data_loc "):]
    declarator = _DECLARATOR.search(decl)
    if declarator is None:
        raise BPFError(f"cannot read the tracepoint field declaration {match['decl']!r}")
    length = declarator["length"]
    array_len = int(length) if length and length.isdigit() else None
    field_type = decl[:declarator.start()].strip()
    return TracepointField(name=declarator["name"], type=field_type, offset=int(match["offset"]),
                           size=int(match["size"]), signed=match["signed"] == "1",
                           array_len=array_len, data_loc=data_loc)


def _mounted_tracefs(mounts_path: str = "/proc/self/mounts") -> Optional[str]:
    """The mount point of tracefs if it is mounted, preferring the standard one."""
    try:
        with open(mounts_path) as mounts:
            points = [line.split()[1] for line in mounts if line.split()[2:3] == ["tracefs"]]
    except OSError:
        return None
    return MOUNT_POINT if MOUNT_POINT in points else (points[0] if points else None)


def _mount_tracefs(target: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"nodev", target.encode(), b"tracefs", ctypes.c_ulong(0), None) != 0:
        err = ctypes.get_errno()
        if err in (errno.EPERM, errno.EACCES):
            raise PermissionDeniedError(f"mount -t tracefs nodev {target}", ("CAP_SYS_ADMIN",), err,
                                        note="or mount tracefs there before gespann starts; "
                                             "in a container, a hostPath volume")
        if err == errno.ENODEV:
            raise FeatureUnsupportedError("tracefs", "4.1", err)
        raise BPFError(f"mount -t tracefs nodev {target}: {os.strerror(err)}", err)


@functools.cache
def tracefs_root() -> str:
    """Where tracefs is: mounted already, reachable through debugfs, or mounted here on
    /sys/kernel/tracing (it stays mounted, like a system's own)."""
    mounted = _mounted_tracefs()
    if mounted:
        return mounted
    if os.path.isdir(f"{_DEBUGFS_MOUNT_POINT}/events"):  # debugfs mounts tracefs there on first access
        return _DEBUGFS_MOUNT_POINT
    if not os.path.isdir(MOUNT_POINT):
        raise FeatureUnsupportedError("tracefs (no /sys/kernel/tracing, no debugfs tracing)", "4.1")
    _mount_tracefs(MOUNT_POINT)
    return MOUNT_POINT


def read_format(category: str, name: str, root: Optional[str] = None) -> TracepointFormat:
    """The format of tracepoint `category:name`; TracepointNotFoundError if this kernel lacks it."""
    if not (category and name) or "/" in category + name or category.startswith(".") or name.startswith("."):
        raise ValueError(f"not a tracepoint name: {category}:{name}")
    path = os.path.join(root or tracefs_root(), "events", category, name, "format")
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        raise TracepointNotFoundError(category, name) from None
    except PermissionError as e:
        # tracefs is root's, mode 0700: uid 0 reads it as its owner, any other uid needs to bypass DAC.
        raise PermissionDeniedError(f"reading {path}", ("CAP_DAC_READ_SEARCH",), e.errno,
                                    note="tracefs is root's, mode 0700: or run as uid 0") from None
    except OSError as e:
        raise BPFError(f"reading {path}: {e.strerror}", e.errno) from None
    return parse_format(text, category, name)
