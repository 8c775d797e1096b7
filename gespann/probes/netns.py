"""Scoping a probe to one network namespace, as a sidecar watches only its own pod.

A socket's namespace is `sk->__sk_common.skc_net.net->ns.inum`, the inode
number that `stat /proc/PID/ns/net` shows. Both offsets come from BTF (or a
vendored table).
"""

from __future__ import annotations

import os

from asm import R2, Program, Register

from ..btf import KernelTypes
from .kernel_memory import emit_read_field


def namespace_inode(path: str) -> int:
    """The inode number of a namespace file such as /proc/self/ns/net or /run/netns/NAME."""
    return os.stat(path).st_ino


def emit_netns_check(p: Program, sk: Register, types: KernelTypes, netns: int, skip: str,
                     scratch: int, direct: bool = False) -> None:
    """Emit code that jumps to `skip` unless the socket at `sk` lives in namespace `netns`.

    `scratch` is a free 8-byte stack slot; `direct`: `sk` is BTF-typed (see emit_read_field).
    Clobbers R0-R5 (only R2 if direct).
    """
    emit_read_field(p, R2, sk, types.field("sock_common.skc_net.net"), scratch, direct)
    emit_read_field(p, R2, R2, types.field("net.ns.inum"), scratch, direct)
    p.jne32(R2, netns, skip)  # inode numbers are u32 and may exceed s32
