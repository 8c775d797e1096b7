"""Ownership of kernel objects: an fd that closes once, and `with` support for what holds fds.

The kernel releases a map, program, link or perf event when its last fd
closes, so closing is how gespann unloads; nothing is pinned.
"""
from __future__ import annotations

import errno
import os
import weakref

from .errors import BPFError


class Closable:
    """`with obj:` closes `obj` at the end of the block."""

    __slots__ = ()

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Fd(Closable):
    """An owned file descriptor: `close()` is idempotent, and a forgotten one is closed when collected."""

    __slots__ = ("_fd", "_finalizer", "__weakref__")

    def __init__(self, fd: int):
        self._fd = fd
        self._finalizer = weakref.finalize(self, os.close, fd)

    def __int__(self) -> int:
        if self._fd < 0:
            raise BPFError("use of a closed file descriptor", errno.EBADF)
        return self._fd

    def fileno(self) -> int:
        return int(self)

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        if self._fd >= 0:
            self._fd = -1
            self._finalizer()

    def __repr__(self) -> str:
        return f"Fd({self._fd})" if self._fd >= 0 else "Fd(closed)"
