"""What the deployment tests read from a running gespann: its capabilities and its metrics page (the BPF
objects it holds, and whether the kernel still has them: bpf_objects)."""
from __future__ import annotations

import socket
from pathlib import Path

from gespann.bpf.errors import CAPABILITIES


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
