"""Resolving kernel types from BTF in a short-lived child process, so the daemon never holds the parser.

A cache miss (the first start on a kernel build, or every start of a
container whose cache does not persist) reads the kernel's 5-6 MB of BTF
and imports construct to parse it: together about 13 MiB that a
long-running sidecar would otherwise keep for its whole life, as resident
memory it never uses again. A forked child does that work and hands back
only the result, as the cache's own JSON; its memory goes when it exits.

The child's errors come back as the same exception classes, with their
messages. Where a child cannot be made (fork refused by a seccomp filter or
a process limit) the work is done here, as before: slower to give memory
back, never a failure.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from pathlib import Path

from . import errors
from .kerneltypes import KernelTypes
from .manifest import NO_NEEDS, KernelNeeds

log = logging.getLogger(__name__)

#: The error classes a child may report by name; any other failure comes back as BTFError with its traceback.
_ERRORS = {cls.__name__: cls for cls in (errors.BTFError, errors.MalformedBTF, errors.TypeNotFound,
                                         errors.FieldNotFound, errors.NoKernelTypes)}


def resolve_apart(path: Path, release: str, machine: str, extra: KernelNeeds = NO_NEEDS) -> KernelTypes:
    """The manifest, and the probes' needs beyond it, resolved from the BTF at `path` by a child process;
    here if no child can be made."""
    started = time.monotonic()
    readable, writable = os.pipe()
    try:
        pid = os.fork()
    except OSError as err:
        os.close(readable)
        os.close(writable)
        log.debug("resolving kernel types in this process: no child process (%s)", err.strerror or err)
        return resolve_here(path, release, machine, extra)
    if pid == 0:  # the child: never returns
        os.close(readable)
        _child(writable, path, release, machine, extra)
    os.close(writable)
    with os.fdopen(readable, "rb") as pipe:
        answer = pipe.read()
    _, status, usage = os.wait4(pid, 0)
    log.info("kernel types resolved from %s (not cached yet) in a child process: %.0f ms, its peak RSS %.1f MiB",
             path, (time.monotonic() - started) * 1e3, usage.ru_maxrss / 1024)
    return _result(answer, status, str(path))


def resolve_here(path: Path, release: str, machine: str, extra: KernelNeeds = NO_NEEDS) -> KernelTypes:
    from .resolve import resolve_manifest  # the parser and construct: imported only on a cache miss
    from .sources import load_bytes, read

    return resolve_manifest(load_bytes(read(path), name=str(path)), release=release, machine=machine, extra=extra)


def _child(writable: int, path: Path, release: str, machine: str, extra: KernelNeeds) -> None:
    code = 0
    try:
        try:
            answer = {"types": resolve_here(path, release, machine, extra).to_json()}
        except errors.BTFError as err:
            answer = {"error": type(err).__name__, "message": str(err),
                      "close_names": list(getattr(err, "close_names", ()))}
        except BaseException:  # noqa: BLE001 (a bug: its traceback goes to the parent, which raises it)
            answer = {"error": "BTFError", "message": "resolving kernel types failed:\n" + traceback.format_exc()}
        data = json.dumps(answer).encode()
        with os.fdopen(writable, "wb") as pipe:
            pipe.write(data)
    except BaseException:  # noqa: BLE001 (the parent sees a short answer and says so)
        code = 1
    finally:
        os._exit(code)  # no atexit handlers, no flush of the parent's buffers, no return into its code


def _result(answer: bytes, status: int, source: str) -> KernelTypes:
    try:
        reply = json.loads(answer)
    except ValueError:
        raise errors.BTFError(f"resolving kernel types from {source}: the child process ended without an answer "
                              f"({_how_it_ended(status)})") from None
    if "types" in reply:
        return KernelTypes.from_json(reply["types"], source=source)
    cls = _ERRORS.get(reply.get("error"), errors.BTFError)
    if cls in (errors.TypeNotFound, errors.FieldNotFound):
        raise cls(reply["message"], tuple(reply.get("close_names", ())))
    raise cls(reply["message"])


def _how_it_ended(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
