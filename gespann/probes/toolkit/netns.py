"""Scoping a probe to one network namespace, as a sidecar watches only its own pod.

A socket's namespace is `sk->__sk_common.skc_net.net->ns.inum`, the inode
number that `stat /proc/PID/ns/net` shows. Both offsets come from BTF (or a
vendored table).
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from typing import Callable, Optional, TypeVar

from asm import R2, Program, Register, Slot

from ...bpf.syscall import libc
from ...btf import KernelTypes
from .kernel_memory import emit_read_field

CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def namespace_inode(path: str) -> int:
    """The inode number of a namespace file such as /proc/self/ns/net or /run/netns/NAME."""
    return os.stat(path).st_ino


def emit_netns_check(p: Program, sk: Register, types: KernelTypes, netns: int, skip: str,
                     scratch: Slot, direct: bool = False) -> None:
    """Emit code that jumps to `skip` unless the socket at `sk` lives in namespace `netns`.

    `scratch` is a free 8-byte stack slot; `direct`: `sk` is BTF-typed (see emit_read_field).
    Clobbers R0-R5 (only R2 if direct).
    """
    emit_read_field(p, R2, sk, types.field("sock_common.skc_net.net"), scratch, direct)
    emit_read_field(p, R2, R2, types.field("net.ns.inum"), scratch, direct)
    p.jne32(R2, netns, skip)  # inode numbers are u32 and may exceed s32


def in_namespace(netns_path: Optional[str], make: Callable[[], T]) -> T:
    """`make()` run in the network namespace `netns_path` (the calling thread's, if None): the thread
    enters it and comes back, for what takes its namespace from the caller (a socket, a walk of sockets).
    PermissionError without CAP_SYS_ADMIN."""
    if netns_path is None:
        return make()
    own = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target, netns_path)
            try:
                return make()
            finally:
                _setns(own, "gespann's own network namespace")
        finally:
            os.close(target)
    finally:
        os.close(own)


def _setns(fd: int, what: str) -> None:
    if libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise (PermissionError if code == errno.EPERM else OSError)(code, f"setns into {what}: {os.strerror(code)}")
