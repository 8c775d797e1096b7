"""What the deployment tests read from a running gespann: its capabilities, the BPF objects it
holds and whether the kernel still has them, and its metrics page."""
from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

from gespann.bpf.errors import CAPABILITIES

BPFTOOL = "/usr/sbin/bpftool"


def capability_sets(pid: int) -> dict[str, set[str]]:
    """CapEff and CapPrm of a process, by name (an unnamed bit by its number)."""
    names = {bit: name for name, bit in CAPABILITIES.items()}
    sets = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        field, _, value = line.partition(":")
        if field in ("CapEff", "CapPrm"):
            mask = int(value, 16)
            sets[field] = {names.get(bit, str(bit)) for bit in range(64) if mask >> bit & 1}
    return sets


def held_bpf_objects(pid: int) -> set[tuple[str, int]]:
    """(kind, id) of every BPF program, map and link the process holds a descriptor of."""
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/fdinfo/{fd}").read_text().splitlines()
                          if ":" in line)
        except OSError:
            continue
        held |= {(kind, int(fields[f"{kind}_id"])) for kind in ("link", "prog", "map") if f"{kind}_id" in fields}
    return held


def loaded_bpf_objects() -> set[tuple[str, int]]:
    loaded = set()
    for kind in ("prog", "map", "link"):
        out = subprocess.run([BPFTOOL, "-j", kind, "list"], capture_output=True, text=True, check=True).stdout
        loaded |= {(kind, item["id"]) for item in json.loads(out or "[]")}
    return loaded


def scrape(address: str, port: int) -> tuple[dict[str, float], int]:
    """gespann's metrics page, and the size of the request that fetched it: the scrape is itself a
    connection of the pod's, open while gespann collects, its request received, its response not yet sent."""
    request = b"GET /metrics HTTP/1.0\r\nHost: gespann\r\n\r\n"
    with socket.create_connection((address, port), timeout=10) as http:
        http.sendall(request)
        response = b"".join(iter(lambda: http.recv(1 << 16), b""))
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200"), head
    return {name: float(value) for name, _, value in (line.rpartition(" ") for line in body.decode().splitlines()
                                                       if line and not line.startswith("#"))}, len(request)
