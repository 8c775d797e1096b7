"""Memory shared with the kernel: the mmapped pages of ring buffers and perf buffers."""
from __future__ import annotations

import ctypes
import os

from .syscall import NEEDS_BPF, libc, syscall_error

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
PROT_READ, PROT_WRITE, MAP_SHARED = 0x1, 0x2, 0x01
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_MAP_FAILED = ctypes.c_void_p(-1).value


class MemoryMapping:
    """A region mmap(2)ed from an fd, read and written with aligned native loads and stores.

    Python's mmap module cannot give the address of a read-only mapping, and
    the ring buffers' producer pages must be mapped read-only, so this calls
    libc's mmap. On x86-64 an aligned 8-byte load or store is atomic and
    ordered (TSO), which is what the producer/consumer protocols need.
    """

    def __init__(self, fd: int, length: int, prot: int, offset: int = 0):
        address = libc.mmap(None, length, prot, MAP_SHARED, fd, offset)
        if address in (None, _MAP_FAILED):
            raise syscall_error(f"mmap(fd {fd}, {length} bytes at offset {offset})", ctypes.get_errno(),
                                NEEDS_BPF)
        self.address, self.length = address, length

    def u64(self, offset: int) -> int:
        return ctypes.c_uint64.from_address(self.address + offset).value

    def u32(self, offset: int) -> int:
        return ctypes.c_uint32.from_address(self.address + offset).value

    def set_u64(self, offset: int, value: int) -> None:
        ctypes.c_uint64.from_address(self.address + offset).value = value

    def view(self) -> memoryview:
        """The mapping as a memoryview of bytes, for struct.unpack_from and slices at a fraction of a
        ctypes call's cost each; the caller must drop it before close()."""
        return memoryview((ctypes.c_char * self.length).from_address(self.address)).cast("B")

    def read(self, offset: int, length: int) -> bytes:
        return ctypes.string_at(self.address + offset, length)

    def close(self) -> None:
        if self.address:
            libc.munmap(self.address, self.length)
            self.address = 0
