"""Scoping a probe to one network namespace, as a sidecar watches only its own pod.

A socket's namespace is `sk->__sk_common.skc_net.net->ns.inum`, the inode
number that `stat /proc/PID/ns/net` shows. Both offsets come from BTF (or a
vendored table); the pointers are read with bpf_probe_read_kernel.
"""

from __future__ import annotations

import os

from asm import DW, R0, R1, R2, R3, R10, W, Program, Register

from ..btf import KernelTypes


def namespace_inode(path: str) -> int:
    """The inode number of a namespace file such as /proc/self/ns/net or /run/netns/NAME."""
    return os.stat(path).st_ino


def emit_netns_check(p: Program, sk: Register, types: KernelTypes, netns: int, skip: str,
                     scratch: int) -> None:
    """Emit code that jumps to `skip` unless the socket at `sk` lives in namespace `netns`.

    `scratch` is a free 8-byte stack slot (negative offset from R10). Clobbers R0-R5.
    """
    read = types.field("sock_common.skc_net.net")
    inum = types.field("net.ns.inum")
    p.mov(R3, sk)
    p.add(R3, read.offset)
    _probe_read(p, scratch, DW.bytes)
    p.jne(R0, 0, skip)
    p.ldx(DW, R3, R10, scratch)
    p.add(R3, inum.offset)
    _probe_read(p, scratch, W.bytes)
    p.jne(R0, 0, skip)
    p.ldx(W, R1, R10, scratch)
    p.jne32(R1, netns, skip)  # inode numbers are u32 and may exceed s32


def _probe_read(p: Program, slot: int, size: int) -> None:
    """*(R10 + slot) = *(R3) for `size` bytes; R0 is 0 on success."""
    p.mov(R1, R10)
    p.add(R1, slot)
    p.mov(R2, size)
    p.call("probe_read_kernel")
