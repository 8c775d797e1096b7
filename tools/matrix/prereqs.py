"""What the host needs to boot the matrix's VMs, named by the Debian package that provides it.

Installing them is tools/setup-host.sh's job; this module only looks, so
that a missing piece is reported once, up front, instead of as a failed boot.
"""
from __future__ import annotations

import shutil
import struct
from pathlib import Path

#: Where to look besides PATH: root's sbin directories are not on every PATH.
_EXTRA_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin")

_PT_INTERP = 3


def missing_packages() -> list[str]:
    """Debian packages whose programs the VM runs need and the host lacks, in a stable order."""
    missing = []
    if not _which("qemu-system-x86_64"):
        missing.append("qemu-system-x86")
    if not _which("depmod"):
        missing.append("kmod")
    if not any(is_static_elf(p) for p in filter(None, map(_which, ("busybox-static", "busybox.static", "busybox")))):
        missing.append("busybox-static")  # virtme-ng builds the guest's initramfs around it
    return missing


def is_static_elf(path: str | Path) -> bool:
    """True for a 64-bit little-endian ELF without a program interpreter, i.e. statically linked."""
    try:
        with open(path, "rb") as f:
            header = f.read(64)
            if header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
                return False
            phoff, = struct.unpack_from("<Q", header, 0x20)
            phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
            if phentsize < 4:
                return False
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except (OSError, struct.error, IndexError):
        return False
    types = [struct.unpack_from("<I", table, i * phentsize)[0] for i in range(len(table) // phentsize)]
    return _PT_INTERP not in types


def _which(program: str) -> str | None:
    return shutil.which(program) or shutil.which(program, path=":".join(_EXTRA_DIRS))
