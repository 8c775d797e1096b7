"""In-kernel cost of per-peer counts: ns per run of tcp_lifecycle (and of tcp_nat) with labels.peers off and on.

The same loopback load (loadgen.c) runs in a namespace of its own, with tcp_lifecycle attached once without
per-peer counts and once with them, alternately, ROUNDS times; the kernel's own run_cnt and run_time_ns of
each program (statistics on only while this runs) give ns per run. With peers on, tcp_nat runs on every
packet handed to a device (net_dev_queue) and is reported apart: on loopback it finds no conntrack entry,
so its figure is the price every packet pays.

    python3 tools/bench/peer_cost.py [--worst] [CONNECTIONS [ROUNDS]]
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import loadgen  # noqa: E402
from gespann.bpf.programs import enable_run_stats  # noqa: E402
from gespann.probes import AttachSettings, ProbeSet  # noqa: E402
from gespann.probes.tcp import lifecycle, nat, resets  # noqa: E402
from gespann.probes.tcp import peers as peers_module  # noqa: E402

#: --worst: every address in a named network (a trie lookup per event), and translations seen (a NAT lookup
#: per client event), as on a Kubernetes node with labels.networks set.
WORST = (("loopback", ("127.0.0.0/8",)),)


def one_run(binary: Path, namespace: str, inode: int, peers: bool, connections: int,
            worst: bool = False) -> dict[str, float]:
    """ns per run of each program, over one load of `connections` connections."""
    probes = (lifecycle.PROBE, *resets.PROBES, *((nat.PROBE,) if peers else ()))
    settings = AttachSettings(netns=inode, peers=peers, networks=WORST if worst and peers else ())
    with ProbeSet.attach(probes, settings) as attached:
        if worst and peers:
            attached["tcp_lifecycle"].maps[peers_module.NAT_SEEN][0] = 1
        before = {name: [p.info() for p in a.programs] for name, a in attached.probes.items()}
        loadgen.run(binary, connections, 60, 2, prefix=["ip", "netns", "exec", namespace])
        found = {}
        for name, a in attached.probes.items():
            runs = sum(p.info().run_cnt for p in a.programs) - sum(i.run_cnt for i in before[name])
            ns = sum(p.info().run_time_ns for p in a.programs) - sum(i.run_time_ns for i in before[name])
            found[name] = ns / runs if runs else float("nan")
            found[f"{name} runs"] = runs
        return found


def main() -> None:
    worst = "--worst" in sys.argv
    argv = [arg for arg in sys.argv if arg != "--worst"]
    connections = int(argv[1]) if len(argv) > 1 else 20000
    rounds = int(argv[2]) if len(argv) > 2 else 5
    name = f"gespann-cost-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        inode = Path(f"/run/netns/{name}").stat().st_ino
        with tempfile.TemporaryDirectory() as tmp, enable_run_stats():
            binary = loadgen.build(Path(tmp) / "loadgen")
            results: dict[bool, list[dict]] = {False: [], True: []}
            for _ in range(rounds):
                for peers in (False, True):
                    results[peers].append(one_run(binary, name, inode, peers, connections, worst))
        off = [r["tcp_lifecycle"] for r in results[False]]
        on = [r["tcp_lifecycle"] for r in results[True]]
        for label, values in (("off", off), ("on: ", on)):
            rounds_ns = ", ".join(f"{v:.1f}" for v in values)
            print(f"tcp_lifecycle ns/run, peers {label} median {statistics.median(values):.1f} ({rounds_ns})")
        paired = [a / b for a, b in zip(on, off)]  # each round's two runs ran back to back, under like load
        print(f"ratio on/off: {statistics.median(paired):.2f} (median of each round's ratio; "
              f"{', '.join(f'{r:.2f}' for r in paired)}), {statistics.median(on) / statistics.median(off):.2f} "
              f"(ratio of medians)")
        print(f"runs per round: {results[True][0]['tcp_lifecycle runs']} (lifecycle)")
        nat_ns = [r["tcp_nat"] for r in results[True]]
        print(f"tcp_nat ns/run (every packet queued, no conntrack entry here): median {statistics.median(nat_ns):.1f}, "
              f"runs per round {results[True][0]['tcp_nat runs']}")
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


if __name__ == "__main__":
    main()
