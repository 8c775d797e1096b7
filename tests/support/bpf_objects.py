"""Which BPF programs, maps and links a process holds, and which the kernel has loaded: the oracle for
"nothing of this gespann stays loaded", read from /proc and bpftool.

Other BPF users, and other gespann instances (a service on the machine, another suite), may run at the
same time, with the same program and map names: a test tells its own objects from theirs by id, never by
name. A process the test watches while it runs is known by the descriptors it holds (`held_by`); one too
short-lived to watch is known by what it leaves: objects loaded after it started that no process holds
(`unheld_since`).
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Iterable

BPFTOOL = "/usr/sbin/bpftool"
KINDS = ("prog", "map", "link")

BpfObject = tuple[str, int]  # ("prog" | "map" | "link", id)


def _fdinfo_fields(path: str) -> dict[str, str]:
    with open(path) as info:
        return dict(line.split(":", 1) for line in info if ":" in line)


def held_by(pid: int) -> set[BpfObject]:
    """(kind, id) of every BPF program, map and link the process holds a descriptor of."""
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            fields = _fdinfo_fields(f"/proc/{pid}/fdinfo/{fd}")
        except OSError:
            continue
        for kind in ("link", "prog", "map"):  # a link's fdinfo names its program too: the link is what is held
            if f"{kind}_id" in fields:
                held.add((kind, int(fields[f"{kind}_id"])))
                break
    return held


def _listing(kind: str, attempts: int = 5) -> list[dict]:
    """bpftool's list of one kind. An object freed between bpftool finding its id and opening it fails
    the whole listing (bpftool 7.1 `link list`): another process's, most likely; listed again."""
    for attempt in range(attempts):
        done = subprocess.run([BPFTOOL, "-j", kind, "list"], capture_output=True, text=True, timeout=60)
        if done.returncode == 0:
            return json.loads(done.stdout or "[]")
        time.sleep(0.05)
    raise AssertionError(f"bpftool {kind} list failed {attempts} times: {done.stderr.strip()}")


def loaded() -> set[BpfObject]:
    """(kind, id) of every BPF program, map and link loaded in the kernel now."""
    return {(kind, item["id"]) for kind in KINDS for item in _listing(kind)}


def names(objects: Iterable[BpfObject]) -> set[str]:
    """The names the kernel gives these objects (those still loaded)."""
    wanted = set(objects)
    return {item.get("name", "") for kind in KINDS for item in _listing(kind) if (kind, item["id"]) in wanted}


def held_anywhere() -> set[BpfObject]:
    """Every object some live process keeps loaded: by a descriptor of it, of a link to it, or of a program
    that uses it (a map)."""
    held: set[BpfObject] = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fdinfo")
        except OSError:
            continue
        for fd in fds:
            try:
                fields = _fdinfo_fields(f"/proc/{pid}/fdinfo/{fd}")
            except OSError:
                continue
            held |= {(kind, int(fields[f"{kind}_id"])) for kind in KINDS if f"{kind}_id" in fields}
    for program in _listing("prog"):
        if ("prog", program["id"]) in held:
            held |= {("map", map_id) for map_id in program.get("map_ids", ())}
    return held


def newest_ids() -> dict[str, int]:
    """The highest id of each kind loaded now: the kernel hands out ids in increasing order, so an object
    with a higher id was loaded later."""
    newest = dict.fromkeys(KINDS, 0)
    for kind, object_id in loaded():
        newest[kind] = max(newest[kind], object_id)
    return newest


def unheld_since(newest: dict[str, int]) -> set[BpfObject]:
    """Objects loaded after `newest_ids()` was taken that no live process holds: what a process that has
    exited since left behind (pinned, or leaked). Another program's objects it is freeing show for a moment
    too: wait for this to be empty rather than assert it once."""
    fresh = {(kind, object_id) for kind, object_id in loaded() if object_id > newest[kind]}
    return fresh - held_anywhere() if fresh else set()
