"""Which BPF programs, maps and links a process holds, and which the kernel has loaded: the oracle for
"nothing of this gespann stays loaded", read from /proc and bpftool, on a host where other BPF users and
other gespann instances may run at the same time."""
from __future__ import annotations

import json
import os
import subprocess

BPFTOOL = "/usr/sbin/bpftool"


def held_by(pid: int) -> set[tuple[str, int]]:
    """(kind, id) of every BPF program, map and link the process holds a descriptor of."""
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as info:
                fields = dict(line.split(":", 1) for line in info if ":" in line)
        except OSError:
            continue
        for kind in ("link", "prog", "map"):
            if f"{kind}_id" in fields:
                held.add((kind, int(fields[f"{kind}_id"])))
                break
    return held


def loaded() -> set[tuple[str, int]]:
    """(kind, id) of every BPF program, map and link loaded in the kernel now."""
    objects = set()
    for kind in ("prog", "map", "link"):
        out = subprocess.run([BPFTOOL, "-j", kind, "list"], capture_output=True, text=True, check=True,
                             timeout=60).stdout
        objects |= {(kind, item["id"]) for item in json.loads(out or "[]")}
    return objects
