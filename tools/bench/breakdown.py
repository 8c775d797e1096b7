"""The breakdown: what each of gespann's programs costs one loopback connection, and the floor under it.

Per program: ns per event (run_time_ns / run_cnt), events per connection and their product, ns per
connection. Added up, against a bare loopback connection's CPU (the load generator's own, kernel
work included, measured in the same rounds with no tracer), they are the share the monitored
workload pays. The floor is an empty program (`r0 = 0; exit`) of the same flavour on the same
tracepoint for each of gespann's programs, attached by the bench's own process and measured in the
same rounds: what running anything at all there costs (with run statistics on, as every figure
here), so what the share cannot go under. Beside each, the empty program of the other flavour
(raw_tracepoint for tp_btf and back) tells what the flavour itself costs. bpftrace (connections.bt)
and libbpf-tools' tcplife take their turn in the same rounds, and so does any other build of
gespann given with --compare, to measure a change before and after in the same rounds.

The programs run for every event on the host, others' work included, so events per connection come
from a counting run (bpftrace) that counts the events of the bench's own namespace, by kind: the
inet_sock_set_state events tcp_lifecycle acts on (the state entered is SYN_SENT, ESTABLISHED or
CLOSE) and those it leaves at its first instructions, and kfree_skb's by drop reason. A variant of
the floor that does only tcp_lifecycle's first instructions (read the state entered, compare it
three times) gives the cost of an event left there, so what an event it acts on costs follows from
its total.
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

from asm import DW, R0, R1, R2, Program

from . import runs
from .bpftrace_tracer import Bpftrace, parse_maps
from .libbpf_tools import TCPLIFE, LibbpfTool
from .process import Launched
from .summary import Spread, spread

NONE, GESPANN, FLOOR, BPFTRACE = "none", "gespann", "floor", "bpftrace"
#: A round's key of a variant of gespann (--compare LABEL=EXECUTABLE): "variant: LABEL".
VARIANT = "variant: "
TCPLIFE_NAME = TCPLIFE.name
#: The floor's variant doing tcp_lifecycle's first instructions only.
LIFECYCLE_FILTER = "tcp_lifecycle (first instructions)"
#: What a floor program stands for: the floor of one of gespann's programs (same flavour, same tracepoint),
#: tcp_lifecycle's first instructions, or the empty program of the other BTF-or-not flavour beside it.
SAME, FILTER, OTHER = "same flavour", "first instructions", "other flavour"
OTHER_FLAVOUR = {"tp_btf": "raw_tracepoint", "raw_tracepoint": "tp_btf"}
#: The most of a bare loopback connection's CPU every default program together may take.
SHARE_TARGET = 0.02
#: The variant of gespann with per-peer counts on (labels.peers), in every round: its in-kernel cost per
#: event against the default's. A named network takes loopback's addresses, so every event also looks its
#: remote address up in the networks' trie: the dearer way per-peer counts go.
PEERS_ON = "labels.peers on"
PEERS_CONFIG = "labels:\n  peers: true\n  networks: {loopback: [127.0.0.0/8, '::1/128']}\n"
#: The most per-peer counts may multiply tcp_lifecycle's ns per event.
PEERS_TARGET = 1.3
LIFECYCLE = "tcp_lifecycle"
STATE_TRACEPOINT = "inet_sock_set_state"
#: The states entered that tcp_lifecycle acts on (include/net/tcp_states.h): ESTABLISHED, SYN_SENT, CLOSE.
LIFECYCLE_STATES = (1, 2, 7)
#: tcp_lifecycle's argument slot of the state entered: (sk, oldstate, newstate), 8 bytes each.
NEWSTATE_OFFSET = 16
_ITEM = re.compile(r"(?P<probe>\w+)=(?P<mode>\w+)/(?P<tracepoint>\w+)")
STATE_NAMES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
               7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING", 12: "NEW_SYN_RECV"}

#: The counting run's script: events per kind, of the bench's namespace ($1, its inode) and host-wide.
KINDS_SCRIPT = r"""
BEGIN { printf("ready\n"); }
tracepoint:sock:inet_sock_set_state
{
	@all["inet_sock_set_state"] = count();
	if (args->protocol == 6 && ((struct sock *)args->skaddr)->__sk_common.skc_net.net->ns.inum == $1) {
		@state[args->oldstate, args->newstate] = count();
	}
}
tracepoint:skb:kfree_skb
{
	@all["kfree_skb"] = count();
	$skb = (struct sk_buff *)args->skbaddr;
	if ($skb->sk != 0) {
		if ($skb->sk->__sk_common.skc_net.net->ns.inum == $1) { @drop[args->reason] = count(); }
	} else if ($skb->dev != 0) {
		if ($skb->dev->nd_net.net->ns.inum == $1) { @drop[args->reason] = count(); }
	}
}
tracepoint:net:net_dev_queue
{
	@all["net_dev_queue"] = count();
	if (((struct sk_buff *)args->skbaddr)->dev->nd_net.net->ns.inum == $1) { @own["net_dev_queue"] = count(); }
}
tracepoint:net:netif_receive_skb
{
	@all["netif_receive_skb"] = count();
	if (((struct sk_buff *)args->skbaddr)->dev->nd_net.net->ns.inum == $1) { @own["netif_receive_skb"] = count(); }
}
"""


def attached(probes_line: str) -> list[tuple[str, str, str]]:
    """(probe, mode, tracepoint) of each program in gespann's start-up line
    ('tcp_lifecycle=tp_btf/inet_sock_set_state(bpf_link), ...')."""
    return [(m["probe"], m["mode"], m["tracepoint"]) for m in _ITEM.finditer(probes_line)]


def empty_program(name: str, filter_states: tuple[int, ...] = ()) -> Program:
    """`r0 = 0; exit`, or with `filter_states`: first read the state entered and compare it with each,
    every way out the same (what tcp_lifecycle does with an event it leaves)."""
    p = Program(name)
    out = p.new_label("out")
    if filter_states:
        p.ldx(DW, R2, R1, NEWSTATE_OFFSET)
        for state in filter_states:
            p.jeq32(R2, state, out)
    p.label(out)
    p.mov(R0, 0)
    p.exit()
    return p


class Floor:
    """Empty programs of the same flavours on the same tracepoints as gespann's, held by this process
    while the workload runs; and the variant of tcp_lifecycle's first instructions."""

    def __init__(self, programs: list[tuple[str, str, str]]):
        self.programs = programs
        self._loaded: dict[str, tuple] = {}  # name -> (tracepoint, kind, program, link)

    def __enter__(self) -> Floor:
        from gespann.bpf.links import attach_raw_tracepoint, attach_tp_btf
        from gespann.bpf.programs import load_program
        from gespann.bpf.syscall import AttachType, ProgType

        spec = None
        wanted = [(probe, mode, tp, (), SAME) for probe, mode, tp in self.programs]
        wanted += [(LIFECYCLE_FILTER, mode, tp, LIFECYCLE_STATES, FILTER) for probe, mode, tp in self.programs
                   if probe == LIFECYCLE]
        wanted += [(f"{probe} ({OTHER_FLAVOUR[mode]})", OTHER_FLAVOUR[mode], tp, (), OTHER)
                   for probe, mode, tp in self.programs if mode in OTHER_FLAVOUR]
        try:
            for index, (probe, mode, tracepoint, states, kind) in enumerate(wanted):
                program = empty_program(f"floor{index}", states)
                if mode == "tp_btf":
                    if spec is None:
                        from gespann.btf import load_vmlinux
                        from gespann.btf.functions import tracepoint_typedef_id

                        spec = load_vmlinux()
                    loaded = load_program(program, ProgType.TRACING, expected_attach_type=AttachType.TRACE_RAW_TP,
                                          attach_btf_id=tracepoint_typedef_id(spec, tracepoint))
                    link = attach_tp_btf(loaded)
                elif mode == "raw_tracepoint":
                    loaded = load_program(program, ProgType.RAW_TRACEPOINT)
                    link = attach_raw_tracepoint(loaded, tracepoint)
                else:
                    raise ValueError(f"floor: no empty program for attach mode {mode!r} ({probe})")
                self._loaded[probe] = (tracepoint, kind, loaded, link)
        except BaseException:
            self.close()
            raise
        return self

    def snapshot(self) -> dict[str, tuple[str, str, int, int]]:
        """name -> (tracepoint, kind, run_cnt, run_time_ns) now."""
        out = {}
        for name, (tracepoint, kind, program, _) in self._loaded.items():
            info = program.info()
            out[name] = (tracepoint, kind, info.run_cnt, info.run_time_ns)
        return out

    def close(self) -> None:
        for _, _, program, link in self._loaded.values():
            link.close()
            program.close()
        self._loaded.clear()

    def __exit__(self, *exc) -> None:
        self.close()


def by_probe(run: dict, programs: list[tuple[str, str, str]]) -> dict:
    """gespann's run with its programs named by probe, not by the kernel's 15-character object name."""
    from gespann.probes.toolkit.probe import object_name

    names = {object_name(probe): probe for probe, _, _ in programs}
    run["per_program"] = {names.get(name, name): cost for name, cost in run.get("per_program", {}).items()}
    return run


def floor_run(floor: Floor, workload: runs.Workload) -> dict:
    """The workload under the floor's programs (run statistics on): per program, runs and run time."""
    before = floor.snapshot()
    load = workload.run()
    after = floor.snapshot()
    return {"rate": load.per_second, "connections": load.connections,
            "load_cpu_us_per_connection": load.cpu_us_per_connection,
            "per_program": {name: {"tracepoint": tp, "kind": kind, "runs": cnt - before[name][2],
                                   "run_time_ns": ns - before[name][3]}
                            for name, (tp, kind, cnt, ns) in after.items()}}


def count_kinds(workload: runs.Workload, workdir: Path, netns_inode: int) -> dict:
    """One workload run under the counting script: events per kind of the bench's namespace, and
    every event of each tracepoint on the host."""
    script = workdir / "kinds.bt"
    script.write_text(KINDS_SCRIPT)
    launched = Launched(["bpftrace", "-B", "line", str(script), str(netns_inode)])
    try:
        launched.wait_line(lambda line: line.strip() == "ready", 120)
        load = workload.run()
        time.sleep(0.2)
    finally:
        launched.stop()
    maps = parse_maps(launched.output())
    states = {key.replace(" ", ""): n for (name, key), n in maps.items() if name == "state"}
    drops = {key: n for (name, key), n in maps.items() if name == "drop"}
    own = {STATE_TRACEPOINT: sum(states.values()), "kfree_skb": sum(drops.values()),
           **{key: n for (name, key), n in maps.items() if name == "own"}}
    return {"connections": load.connections, "states": states, "drops": drops, "own": own,
            "host": {key: n for (name, key), n in maps.items() if name == "all"}}


def run(gespann, workload: runs.Workload, workdir: Path, netns_inode: int, rounds: int,
        say: Callable[[str], None], variants: dict | None = None) -> dict:
    """`rounds` rounds (run statistics must be on): no tracer, gespann run, the floor, bpftrace and
    tcplife in turn, and each of `variants` (label -> another `gespann run`, a build to compare);
    then the counting run."""
    first = runs.gespann_metrics(gespann, workload, stats=True)  # a warm-up that names the programs
    programs = attached(first["probes"])
    result: dict = {"probes": first["probes"], "rounds": []}
    tcplife = LibbpfTool(TCPLIFE, workdir)
    with Floor(programs) as floor:
        tracers = {NONE: lambda: runs.baseline(workload),
                   GESPANN: lambda: by_probe(runs.gespann_metrics(gespann, workload, stats=True), programs),
                   FLOOR: lambda: floor_run(floor, workload),
                   BPFTRACE: lambda: runs.bpftrace(Bpftrace(netns_inode), workload, stats=True),
                   TCPLIFE_NAME: lambda: runs.libbpf_tool(tcplife, workload, stats=True)}
        for label, variant in (variants or {}).items():
            tracers[VARIANT + label] = (lambda v=variant: by_probe(runs.gespann_metrics(v, workload, stats=True),
                                                                   programs))
        if not _has("bpftrace"):
            del tracers[BPFTRACE]
        if not _has(TCPLIFE.program):
            del tracers[TCPLIFE_NAME]
        order = list(tracers)
        for index in range(rounds):
            measured = {name: tracers[name]() for name in runs.rotated(order, index)}
            result["rounds"].append(measured)
            total = _per_connection(measured[GESPANN])
            say(f"breakdown round {index + 1}/{rounds}: gespann {total:.0f} ns per connection, floor "
                f"{_per_connection(measured[FLOOR]):.0f}" + "".join(
                    f", {name} {_per_connection(r):.0f}" for name, r in measured.items() if name.startswith(VARIANT)))
    if _has("bpftrace"):
        result["kinds"] = count_kinds(workload, workdir, netns_inode)
    return result


def _has(program: str) -> bool:
    from .libbpf_tools import locate

    return locate(program) is not None


def _per_connection(run: dict) -> float:
    """ns per connection of every program of the run; of the floor, only its programs of the same flavour."""
    costs = run.get("per_program") or run.get("per_tracepoint", {})
    return sum(c["run_time_ns"] for c in costs.values() if c.get("kind", SAME) == SAME) / run["connections"]


# --- figures -------------------------------------------------------------------------------------------------


def _program_spreads(rounds: list[dict], tracer: str, name: str) -> tuple[Spread | None, Spread | None,
                                                                          Spread | None]:
    """ns per event, events per connection, ns per connection of one program, over the rounds."""
    return _cost_spreads(rounds, tracer, "per_program", name)


def _cost_spreads(rounds: list[dict], tracer: str, by: str, name: str) -> tuple[Spread | None, Spread | None,
                                                                                Spread | None]:
    """ns per event, events per connection, ns per connection of the costs `by` (per_program,
    per_tracepoint) keeps under `name`, over the rounds."""
    per_event, events, per_conn = [], [], []
    for r in rounds:
        run = r.get(tracer)
        cost = run and run.get(by, {}).get(name)
        if not cost or not run["connections"]:
            continue
        if cost["runs"]:
            per_event.append(cost["run_time_ns"] / cost["runs"])
        events.append(cost["runs"] / run["connections"])
        per_conn.append(cost["run_time_ns"] / run["connections"])
    return spread(per_event), spread(events), spread(per_conn)


def figures(result: dict) -> dict:
    """Everything the table shows, as medians (and spreads) over the rounds.

    A program's ns per connection is its ns per event times the events per connection of the bench's
    own namespace (the counting run): the run counts are host-wide, and other work on the machine
    adds events of its own to some rounds. Without a counting run, the host-wide runs are used."""
    rounds = result["rounds"]
    own = _own_events(result.get("kinds"))
    builds = (GESPANN, *_variants(rounds))  # a variant may attach a program the default does not (tcp_nat)
    names = list(dict.fromkeys(name for r in rounds for b in builds for name in r.get(b, {}).get("per_program", {})))
    bare = spread([r[NONE]["load_cpu_us_per_connection"] for r in rounds if NONE in r])
    programs = {}
    for name in names:
        tracepoint = next(r[b]["per_program"][name]["tracepoint"] for r in rounds for b in builds
                          if name in r.get(b, {}).get("per_program", {}))
        other = next((f"{name} ({o})" for o in OTHER_FLAVOUR.values()
                      if any(f"{name} ({o})" in r.get(FLOOR, {}).get("per_program", {}) for r in rounds)), None)
        programs[name] = {"tracepoint": tracepoint,
                          "gespann": _with_own(_program_spreads(rounds, GESPANN, name), own.get(tracepoint)),
                          "floor": _with_own(_program_spreads(rounds, FLOOR, name), own.get(tracepoint)),
                          "other_flavour": (other.split("(")[1].rstrip(")"),
                                            _program_spreads(rounds, FLOOR, other)) if other else None,
                          "variants": {key[len(VARIANT):]: _with_own(_program_spreads(rounds, key, name),
                                                                     own.get(tracepoint))
                                       for key in _variants(rounds)}}
    totals = {GESPANN: _sum(p["gespann"][2] for p in programs.values()),
              FLOOR: _sum(p["floor"][2] for p in programs.values())}
    for key in _variants(rounds):
        totals[key] = _sum(p["variants"][key[len(VARIANT):]][2] for p in programs.values())
    for peer in (BPFTRACE, TCPLIFE_NAME):
        tracepoints = sorted({tp for r in rounds for tp in r.get(peer, {}).get("per_tracepoint", {})})
        totals[peer] = _sum(_with_own(_tracepoint_spreads(rounds, peer, tp), own.get(tp))[2] for tp in tracepoints)
    out = {"bare_us": bare, "programs": programs, "totals": totals, "own_events": bool(own),
           "filter": _program_spreads(rounds, FLOOR, LIFECYCLE_FILTER)}
    if bare and bare.median:
        out["shares"] = {name: _scaled(total, 1 / (bare.median * 1e3)) for name, total in totals.items()}
    kinds = result.get("kinds")
    if kinds and kinds["connections"]:
        out["kinds"] = _kinds(kinds, programs.get(LIFECYCLE), out["filter"])
    return out


def _own_events(kinds: dict | None) -> dict[str, float]:
    """tracepoint -> its events per connection in the bench's namespace, from the counting run."""
    if not kinds or not kinds.get("connections") or "own" not in kinds:
        return {}
    return {tp: n / kinds["connections"] for tp, n in kinds["own"].items()}


def _with_own(spreads: tuple, events: float | None) -> tuple:
    """(ns per event, events per connection, ns per connection): the last two of the namespace's own events
    when counted, else as run (host-wide)."""
    per_event = spreads[0]
    if events is None:
        return spreads
    return per_event, Spread(events, events, events, 1), _scaled(per_event, events) if per_event else \
        Spread(0.0, 0.0, 0.0, 1)


def _tracepoint_spreads(rounds: list[dict], tracer: str, tracepoint: str) -> tuple:
    """The same figures for everything on one tracepoint."""
    return _cost_spreads(rounds, tracer, "per_tracepoint", tracepoint)


def _sum(values) -> Spread | None:
    """Medians, lows and highs added up (the range is the widest the parts allow)."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    return Spread(sum(v.median for v in present), sum(v.low for v in present), sum(v.high for v in present),
                  max(v.n for v in present))


def _variants(rounds: list[dict]) -> list[str]:
    return list(dict.fromkeys(key for r in rounds for key in r if key.startswith(VARIANT)))


def _scaled(value: Spread | None, factor: float) -> Spread | None:
    return Spread(value.median * factor, value.low * factor, value.high * factor, value.n) if value else None


def _kinds(kinds: dict, lifecycle: dict | None, left_cost: tuple) -> dict:
    """inet_sock_set_state events per connection by kind (acted on by tcp_lifecycle or left), and
    what each kind costs: an event left costs what the filter variant costs; the rest is the acted-on ones'."""
    connections = kinds["connections"]
    per_kind = {}
    for key, n in kinds["states"].items():
        old, new = (int(v) for v in key.split(","))
        per_kind[f"{STATE_NAMES.get(old, old)} -> {STATE_NAMES.get(new, new)}"] = (n / connections,
                                                                                  new in LIFECYCLE_STATES)
    acted = sum(n for n, act in per_kind.values() if act)
    left = sum(n for n, act in per_kind.values() if not act)
    out = {"transitions": per_kind, "acted_per_connection": acted, "left_per_connection": left,
           "drops": {reason: n / connections for reason, n in kinds["drops"].items()},
           "own": {tp: n / connections for tp, n in kinds.get("own", {}).items()},
           "host": {tp: n / connections for tp, n in kinds.get("host", {}).items()}}
    filter_ns = left_cost[0].median if left_cost[0] else None
    if lifecycle and lifecycle["gespann"][2] and filter_ns is not None and acted:
        total = lifecycle["gespann"][2].median
        out["left_ns"] = filter_ns
        out["acted_ns"] = (total - left * filter_ns) / acted
    return out


def _fmt(value: Spread | None, digits: int = 0, scale: float = 1.0) -> str:
    if value is None:
        return "—"
    text = f"{value.median * scale:.{digits}f}"
    if value.n > 1 and value.low != value.high:
        text += f" ({value.low * scale:.{digits}f}–{value.high * scale:.{digits}f})"
    return text


def markdown(result: dict) -> list[str]:
    f = figures(result)
    measured = result.get("measured", {})
    lines = ["", "### Breakdown: what each program costs a loopback connection, and the floor", "",
             (f"Measured {measured.get('date', '?')} on kernel {measured.get('kernel', '?')}, "
              f"{measured.get('cpus', '?')} CPUs, commit {measured.get('commit', '?')}, load average "
              f"{measured.get('load_before', '?')}; medians of {len(result['rounds'])} rounds (min–max in brackets), "
              "each a turn of: no tracer, `gespann run` (default probes), the floor (an empty program of the "
              "same flavour on the same tracepoint for each of gespann's programs, `r0 = 0; exit`), bpftrace, "
              "tcplife; BPF run statistics on. ns per event is each program's run_time_ns over run_cnt; "
              "events per connection are the bench's own namespace's, counted in one more run (bpftrace), "
              "since the programs run for every event on the host, others' work included. "
              f"gespann probes: {result.get('probes', '?')}."), "",
             "| program (tracepoint) | ns per event | events per connection | ns per connection | floor: ns per "
             "event | floor: ns per connection | empty program of the other flavour: ns per event |",
             "|---|---|---|---|---|---|---|"]
    for name, p in f["programs"].items():
        g, fl, other = p["gespann"], p["floor"], p["other_flavour"]
        lines.append(f"| {name} ({p['tracepoint']}) | {_fmt(g[0])} | {_fmt(g[1], 2)} | {_fmt(g[2])} | "
                     f"{_fmt(fl[0])} | {_fmt(fl[2])} | {f'{_fmt(other[1][0])} ({other[0]})' if other else '—'} |")
    totals, shares = f["totals"], f.get("shares", {})
    lines.append(f"| **all programs** | | | **{_fmt(totals[GESPANN])}** | | **{_fmt(totals[FLOOR])}** | |")
    variants = _variants(result["rounds"])
    if variants:
        lines += ["", "Against other builds of gespann, in the same rounds: ns per connection (ns per event).", "",
                  "| program | this build | " + " | ".join(v[len(VARIANT):] for v in variants) + " |",
                  "|---|---|" + "---|" * len(variants)]
        for name, p in f["programs"].items():
            cells = [f"{_fmt(p['gespann'][2])} ({_fmt(p['gespann'][0])})"]
            cells += [f"{_fmt(p['variants'][v[len(VARIANT):]][2])} ({_fmt(p['variants'][v[len(VARIANT):]][0])})"
                      for v in variants]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("| **all programs** | " + " | ".join(_fmt(totals[k]) for k in (GESPANN, *variants)) + " |")
    lines += ["", "| per loopback connection | ns in the kernel | share of a bare connection's CPU |", "|---|---|---|"]
    lines.append(f"| bare loopback connection, no tracer (the load generator's CPU, kernel work included) | "
                 f"{_fmt(f['bare_us'], scale=1e3)} | 100 % |")
    for name, label in ((GESPANN, "gespann run, every default program"), (FLOOR, "the floor: empty programs"),
                        (BPFTRACE, "bpftrace (connections.bt)"), (TCPLIFE_NAME, "tcplife (libbpf-tools)")):
        lines.append(f"| {label} | {_fmt(totals.get(name))} | {_fmt(shares.get(name), 2, 100)} % |")
    peers = peers_cost(result)
    if peers and peers["ratio"]:
        lines += ["", f"- per-peer counts ({PEERS_ON}, a named network taking every loopback address): "
                      f"tcp_lifecycle {_fmt(peers['on_ns'])} ns per event against {_fmt(peers['off_ns'])} off, "
                      f"{_fmt(peers['ratio'], 2)}x round by round (target <= {PEERS_TARGET:g}x: "
                      f"{'met' if peers['ratio'].median <= PEERS_TARGET else 'MISSED'}); every program per "
                      f"connection, tcp_nat included: {_fmt(peers['per_connection_ratio'], 2)}x"]
    g, fl = shares.get(GESPANN), shares.get(FLOOR)
    if g and fl:
        lines += ["", f"- share of a bare connection's CPU, every default program: {g.median * 100:.2f} % "
                      f"(target <= 2 %: {'met' if g.median <= SHARE_TARGET else 'MISSED'}); the floor leaves "
                      f"{fl.median * 100:.2f} %, so {(g.median - fl.median) * 100:.2f} points are the programs' "
                      "own work"]
    kinds = f.get("kinds")
    if kinds:
        lines += ["", f"inet_sock_set_state events per connection (TCP, both sides, counted in one more run): "
                      f"{kinds['acted_per_connection']:.2f} tcp_lifecycle acts on, {kinds['left_per_connection']:.2f} "
                      "it leaves at its first instructions: " + ", ".join(
                          f"{k} {n:.2f}{'' if act else ' (left)'}" for k, (n, act) in
                          sorted(kinds["transitions"].items(), key=lambda kv: -kv[1][0]) if n >= 0.01) + "."]
        if "acted_ns" in kinds:
            lines.append(f"An event left costs what the floor's variant of those first instructions costs, "
                         f"{kinds['left_ns']:.0f} ns; so one it acts on costs {kinds['acted_ns']:.0f} ns.")
        drops = ", ".join(f"reason {r} {n:.2f}" for r, n in sorted(kinds["drops"].items(), key=lambda kv: -kv[1])
                          if n >= 0.01)
        lines.append(f"kfree_skb per connection by drop reason (the kernel's enum skb_drop_reason): "
                     f"{drops or 'none'}. Events per connection in the bench's namespace / on the whole host "
                     "during the counting run: " + ", ".join(
                         f"{tp} {n:.2f} / {kinds['host'].get(tp, 0):.2f}" for tp, n in sorted(kinds["own"].items()))
                     + "; every net_dev_queue and netif_receive_skb event of this workload is a TCP packet, "
                     "which the UDP probes leave.")
    return lines


def peers_cost(result: dict) -> dict | None:
    """Per-peer counts on against off, round by round: tcp_lifecycle's ns per event, and every program's
    ns per connection (tcp_nat, which only per-peer counts attach, included)."""
    rounds = [r for r in result["rounds"] if VARIANT + PEERS_ON in r and GESPANN in r]
    if not rounds:
        return None

    def per_event(run: dict) -> float | None:
        cost = run.get("per_program", {}).get(LIFECYCLE)
        return cost["run_time_ns"] / cost["runs"] if cost and cost["runs"] else None

    on, off = ([per_event(r[k]) for r in rounds] for k in (VARIANT + PEERS_ON, GESPANN))
    paired = [a / b for a, b in zip(on, off) if a and b]
    totals = [_per_connection(r[VARIANT + PEERS_ON]) / without for r in rounds
              if (without := _per_connection(r[GESPANN]))]
    return {"on_ns": spread([v for v in on if v]), "off_ns": spread([v for v in off if v]),
            "ratio": spread(paired), "per_connection_ratio": spread(totals)}


def verdicts(result: dict) -> dict[str, bool | None]:
    """The share's target: every default program together, at most 2 % of a bare connection's CPU; and
    per-peer counts at most 1.3x tcp_lifecycle's ns per event without them."""
    share = figures(result).get("shares", {}).get(GESPANN)
    out = {"share of a bare loopback connection's CPU, every default program <= 2 %":
           None if share is None else share.median <= SHARE_TARGET}
    peers = peers_cost(result)
    if peers is not None:
        out[f"labels.peers on: tcp_lifecycle ns per event <= {PEERS_TARGET:g}x off"] = \
            None if peers["ratio"] is None else peers["ratio"].median <= PEERS_TARGET
    return out
