"""gespann's YAML configuration: parsed once, validated strictly, every error names its key.

The original gespann's format (``log_level`` plus a list of ``adapters``) is accepted,
``adapters`` being the older name of ``exporters`` (a warning says so); the other
sections are gespann's own and all optional. Each exporter's settings are checked
by its kind (gespann/exporters/kinds.py), so the types and their settings are
whatever the exporters register.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping

import yaml

from .bpf.channel import RINGBUF_SIZE
from .exporters import KINDS, ExporterConfig
from .probes.toolkit.flavours import MODES
from .settings import (
    ConfigError,
    Key,
    Keys,
    choice,
    expect,
    flag,
    key_name,
    positive_int,
    reject_unknown,
    seconds,
    show,
)
from .vocabulary import PROTOCOLS

__all__ = ["Config", "ConfigError", "ExporterConfig", "load", "parse"]

LOG_LEVELS = ("debug", "info", "warning", "error")
#: The config's list of exporters, and its older name (the original gespann's), still read.
EXPORTERS_KEY, OLDER_EXPORTERS_KEY = "exporters", "adapters"
#: The exporters when the config names none.
DEFAULT_EXPORTERS = ({"type": "prometheus"},)
EVENT_READERS = ("auto", "ringbuf", "perf")
PERF_EVENT_ATTACH = ("auto", "link", "ioctl")
#: attach.open_connections: how a collection reads open connections: the kernel walks probes offer
#: (Probe.walk) or in user space (a sock_diag dump for TCP, a pass over the flow map for UDP).
OPEN_CONNECTIONS = ("auto", "kernel_walk", "user_space")
#: attach.mode: a flavour for every probe that has it, from the one table of modes, or the first the kernel accepts.
ATTACH_MODES = ("auto", *MODES)
BTF_SOURCES = ("auto", "btf", "vendored")
#: The largest capacity accepted: 2^24 entries is already about 2 GiB of kernel memory for these maps.
MAX_CAPACITY = 1 << 24
#: events.ringbuf_bytes: the kernel wants a power of two and whole pages; past 1 GiB is a mistake, not a need.
RINGBUF_MIN, RINGBUF_MAX = 4096, 1 << 30

#: Every key of the file but the exporters' settings (each exporter kind declares those), in the file's order:
#: the parser's defaults, choices and known keys, and docs/config.md (tools/gen_docs.py), come from here.
KEYS = Keys(
    Key("log_level", "what gespann logs", "info", LOG_LEVELS),
    Key(EXPORTERS_KEY, "one exporter each, `{type: TYPE, settings: {...}}`; TYPE and its settings below",
        DEFAULT_EXPORTERS, values="a list"),
    Key(OLDER_EXPORTERS_KEY, f"the original gespann's name for `{EXPORTERS_KEY}`, still read, with one warning line "
        "in the log; a file with both is an error naming both", values="a list"),
    Key("events.reader", "how connection records leave the kernel: the BPF ring buffer (5.8+) or the perf event "
        "array", "auto", EVENT_READERS),
    Key("events.ringbuf_bytes", "the ring buffer's size: room for the records of bursts the reader cannot follow "
        "at once (a record takes 136 bytes: the default holds about 30,000, over half a second at the highest rate "
        "measured). Kernel memory, taken only while records are on (`gespann trace`, an event exporter); a record "
        "the ring has no room for is counted in `gespann_records_lost_total`", RINGBUF_SIZE,
        values=f"bytes: a power of two from {RINGBUF_MIN} to {RINGBUF_MAX}"),
    Key("attach.mode", "force one attach flavour for every probe that has it; `auto` takes the first the kernel "
        "accepts (see [Attach flavours](flavours.md))", "auto", ATTACH_MODES),
    Key("attach.probes", "force a flavour for one probe, or leave it out (`off`), and its figures with it; `gespann "
        "probes` lists the probes (their costs: see [Benchmarks](benchmarks.md))", {},
        values="`{PROBE: MODE}`, MODE a flavour, `auto` or `off`"),
    Key("attach.perf_event", "attach tracepoint and kprobe programs to their perf event with a bpf_link (5.15+) or "
        "the perf ioctl", "auto", PERF_EVENT_ATTACH),
    Key("attach.open_connections", "how a scrape reads open connections: with walks in the kernel where the kernel "
        "runs them (`kernel_walk` insists, and names what is missing), or in user space: a sock_diag dump of TCP "
        "connections, one pass over the UDP flow map. The walk keeps 16 bytes in the storage of each connection it "
        "has found open, plus the kernel's own bookkeeping for socket storage (a few hundred bytes per socket at "
        "most), all freed with the socket. `gespann check` says which way is taken, and why", "auto",
        OPEN_CONNECTIONS),
    Key("btf.source", "where struct offsets come from: the running kernel's BTF, the tables in `vendored_vmlinux/`, "
        "or a BTF/ELF file", "auto", BTF_SOURCES, values="or a file path"),
    Key("scope.netns", "watch only sockets in that network namespace (a sidecar watching its pod); absent: every "
        "namespace", values="a namespace file, e.g. `/proc/1/ns/net`, `/run/netns/NAME`"),
    Key("scope.protocols", "the protocols watched. UDP's probes run on every packet (about 60 ns sent, 100 ns "
        "received, TCP packets included: see [Benchmarks](benchmarks.md)), so a host that needs no UDP figures "
        "leaves `udp` out and loads no UDP probe", PROTOCOLS,
        values="a list of: " + ", ".join(f"`{protocol}`" for protocol in PROTOCOLS)),
    Key("connections.idle_timeout", "an open connection with no payload for longer counts in "
        "`gespann_connections_idle`", 60.0, values="seconds"),
    Key("connections.udp_flow_timeout", "a UDP flow with no datagram for longer ends, and counts as closed", 120.0,
        values="seconds"),
    Key("labels.process", "opt-in label by process name on `gespann_process_connections_total` and "
        "`gespann_process_bytes_total`. TCP ends are counted by the kernel per owner (cgroup and comm) as they "
        "happen, exact at any rate, in a map of `4 × max_series + 1` owners (about 100 bytes each); past it, owners "
        "count under `other` (logged once). UDP flows count when they end", False, values="`true`, `false`"),
    Key("labels.container", "opt-in label by container id on the same metrics, counted the same way", False,
        values="`true`, `false`"),
    Key("labels.max_series", "most label sets per metric; connections of any later one count under `other`", 100,
        values="a whole number"),
    Key("labels.peers", "opt-in TCP figures by peer (`gespann_peer_*`): a client's by remote endpoint (and the "
        "backend behind a DNAT), a server's by local port, counted in the kernel as they happen and adding up to the "
        "totals; see [Finding the failing upstream](peers.md)", False, values="`true`, `false`"),
    Key("labels.networks", "with `labels.peers`: remote addresses in a named network count as that network, not "
        "one peer each (a fleet of clients fits the cap)", {}, values="`{NAME: [CIDR, ...]}`"),
    Key("limits.tcp_connections", "the kernel's table of TCP connections in flight (a preallocated hash, about 128 "
        "bytes of kernel memory per entry: 8 MiB by default). Where the kernel walk runs (see "
        "`attach.open_connections`), nothing is evicted: a connection the table has no room for keeps its entry in "
        "its socket's storage (about 72 bytes plus the kernel's per-socket overhead, freed with the socket), at the "
        "cost of one allocation. Elsewhere the table is an LRU: with more connections in flight the least recently "
        "updated is evicted, and its end is counted in `gespann_connection_ends_untracked_total` instead of as "
        "closed or reset (logged once, naming this key)", values="entries"),
    Key("limits.udp_flows", "the kernel's table of UDP flows (an LRU hash, about 200 bytes per entry: 3.1 MiB by "
        "default). Datagram, byte and flows-opened totals are counted beside it and stay exact past it; a flow "
        "evicted before it goes idle counts as closed and in `gespann_flows_evicted_total`, its own figures and its "
        "event lost (logged once, naming this key). A scrape reads the table in one pass and keeps nothing per "
        "flow", values="entries"),
    Key("limits.tcp_peers", "the kernel's per-peer rows (a per-CPU hash, 104 bytes per peer and CPU: 1024 by "
        "default); a new peer past it counts under `other` (logged once, naming this key)", values="peers"),
    Key("limits.refused_ports", "local ports whose refused connection attempts (`gespann_inbound_refused_total`) "
        "are told apart, TCP's and UDP's together (a hash, about 100 bytes per entry); past it, ports count under "
        "`local_port=\"other\"` (logged once, naming this key)", values="entries"),
    Key("extra_probes", "probes from outside gespann's tree, each file declaring `PROBE` or `PROBES`; attached "
        "beside gespann's own, their metrics exported like gespann's (see [Writing a probe](writing-a-probe.md)). "
        "They run in gespann's process with its privileges: name only code you trust", (),
        values="a list of Python files (`.py`) or module names"),
)
#: limits.<map>: the kernel maps whose capacity the config sets (each a probe's map name).
LIMITS = KEYS.under("limits")


def _default_exporters() -> tuple[ExporterConfig, ...]:
    return _exporters(list(DEFAULT_EXPORTERS), EXPORTERS_KEY)


@dataclasses.dataclass(frozen=True)
class Config:
    log_level: str = KEYS["log_level"].default
    exporters: tuple[ExporterConfig, ...] = dataclasses.field(default_factory=_default_exporters)
    #: Which reader carries records out of the kernel: the ring buffer (5.8+) or the perf event array.
    event_reader: str = KEYS["events.reader"].default
    ringbuf_bytes: int = KEYS["events.ringbuf_bytes"].default
    #: Which flavour every probe attaches with ("auto": the first the kernel accepts).
    attach_mode: str = KEYS["attach.mode"].default
    #: Per-probe attach modes, over `attach_mode`.
    probe_modes: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: How tracepoint and kprobe programs attach to their perf event: a bpf_link (5.15+) or the ioctl.
    perf_event_attach: str = KEYS["attach.perf_event"].default
    #: How open connections are read at a collection: the kernel walks where they run, or in user space.
    open_connections: str = KEYS["attach.open_connections"].default
    #: Where kernel type information comes from: running kernel's BTF, vendored tables, or a file.
    btf_source: str = KEYS["btf.source"].default
    #: A network-namespace file (/proc/PID/ns/net, /run/netns/NAME): watch only that namespace.
    netns: str | None = None
    #: The protocols watched. UDP's probes run on every packet, TCP's included: a host that
    #: needs no UDP figures saves that cost by leaving it out.
    protocols: tuple[str, ...] = KEYS["scope.protocols"].default
    #: Probes from outside gespann's tree: Python files or modules that declare PROBE or PROBES.
    extra_probes: tuple[str, ...] = ()
    #: Seconds without payload after which an open connection counts as idle (the idle gauge).
    idle_timeout: float = KEYS["connections.idle_timeout"].default
    #: Seconds without a datagram after which a UDP flow ends (and is reported as closed).
    udp_flow_timeout: float = KEYS["connections.udp_flow_timeout"].default
    #: Opt-in labels on the per-process metrics: by process name (comm), by container id.
    label_process: bool = KEYS["labels.process"].default
    label_container: bool = KEYS["labels.container"].default
    #: Most label sets each per-process metric gets; beyond it, connections count under "other".
    label_max_series: int = KEYS["labels.max_series"].default
    #: Opt-in TCP figures by peer (remote endpoint of a client, local port of a server), capped by
    #: limits.tcp_peers; remote addresses grouped by the named networks (name -> CIDRs).
    label_peers: bool = KEYS["labels.peers"].default
    label_networks: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: Kernel map capacities, by map (limits.tcp_connections, limits.udp_flows); absent: the probes' defaults.
    map_capacities: Mapping[str, int] = dataclasses.field(default_factory=dict)
    #: What the file said in an older way that still works, one line each, for the log.
    deprecations: tuple[str, ...] = dataclasses.field(default=(), compare=False)


def load(path: str | Path | None) -> Config:
    """Read and validate a config file; ``None`` gives the defaults."""
    if path is None:
        return Config()
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as err:
        raise ConfigError(str(path), f"cannot read config file: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(str(path), f"not valid UTF-8 at byte {err.start}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(str(path), f"not valid YAML{where}") from None
    except RecursionError:
        raise ConfigError(str(path), "nested too deeply to be a gespann config") from None
    return parse(document if document is not None else {})


def parse(document: Any) -> Config:
    """Validate an already-decoded YAML document."""
    expect(document, dict, "(top level)", "a mapping")
    reject_unknown(document, KEYS.top_level(), "")
    log_level = _chosen(document, "log_level")
    exporters_key, deprecations = _exporters_key(document)
    exporters = _exporters(_given(document, exporters_key, list(DEFAULT_EXPORTERS)), exporters_key)
    events, attach, btf, scope, connections, label_section, limits = (
        _section(document, name) for name in ("events", "attach", "btf", "scope", "connections", "labels", "limits"))
    protocols = _protocols(_given(scope, "protocols", list(KEYS["scope.protocols"].default)), "scope.protocols")
    extra_probes = _extra_probes(_given(document, "extra_probes", list(KEYS["extra_probes"].default)))
    return Config(
        log_level=log_level,
        exporters=exporters,
        event_reader=_chosen(events, "events.reader"),
        ringbuf_bytes=_ringbuf_bytes(_given(events, "ringbuf_bytes", Config.ringbuf_bytes)),
        attach_mode=_chosen(attach, "attach.mode", what="attach mode"),
        probe_modes=_probe_modes(_given(attach, "probes", {}), protocols, extra_probes),
        perf_event_attach=_chosen(attach, "attach.perf_event"),
        open_connections=_chosen(attach, "attach.open_connections"),
        btf_source=_btf_source(_given(btf, "source", KEYS["btf.source"].default)),
        netns=_namespace_file(scope.get("netns"), "scope.netns"),
        protocols=protocols,
        extra_probes=extra_probes,
        idle_timeout=seconds(_given(connections, "idle_timeout", Config.idle_timeout), "connections.idle_timeout"),
        udp_flow_timeout=seconds(_given(connections, "udp_flow_timeout", Config.udp_flow_timeout),
                                 "connections.udp_flow_timeout"),
        label_process=flag(_given(label_section, "process", Config.label_process), "labels.process"),
        label_container=flag(_given(label_section, "container", Config.label_container), "labels.container"),
        label_max_series=positive_int(_given(label_section, "max_series", Config.label_max_series),
                                      "labels.max_series"),
        label_peers=flag(_given(label_section, "peers", Config.label_peers), "labels.peers"),
        label_networks=_networks(_given(label_section, "networks", {})),
        map_capacities={name: _capacity(limits[name], f"limits.{name}") for name in LIMITS
                        if limits.get(name) is not None},
        deprecations=deprecations,
    )


def _chosen(section: dict, path: str, what: str = "value") -> str:
    """The value of a key with choices (KEYS), its default when absent or empty."""
    key = KEYS[path]
    return choice(_given(section, key.name, key.default), key.choices, path, what=what)


def _exporters_key(document: dict) -> tuple[str, tuple[str, ...]]:
    """The key the exporters are listed under, and the deprecation it brings (the older name)."""
    given = [name for name in (EXPORTERS_KEY, OLDER_EXPORTERS_KEY) if document.get(name) is not None]
    if len(given) == 2:
        raise ConfigError(EXPORTERS_KEY, f"given twice, as {EXPORTERS_KEY} and as {OLDER_EXPORTERS_KEY} (its older "
                                         f"name); keep only {EXPORTERS_KEY}")
    if given == [OLDER_EXPORTERS_KEY]:
        return OLDER_EXPORTERS_KEY, (f"config: {OLDER_EXPORTERS_KEY} is the older name of {EXPORTERS_KEY}; "
                                     f"rename the key to {EXPORTERS_KEY}",)
    return EXPORTERS_KEY, ()


def _exporters(value: Any, key: str) -> tuple[ExporterConfig, ...]:
    """Each item's type one of the registered exporter kinds, its settings checked by that kind."""
    expect(value, list, key, "a list")
    exporters = []
    for index, item in enumerate(value):
        item_key = f"{key}[{index}]"
        expect(item, dict, item_key, "a mapping with 'type' and 'settings'")
        reject_unknown(item, ("type", "settings"), item_key)
        if "type" not in item:
            raise ConfigError(f"{item_key}.type", "missing")
        kind = KINDS[choice(item["type"], KINDS, f"{item_key}.type", what="exporter type")]
        exporters.append(ExporterConfig(kind.type, kind.validate(_given(item, "settings", {}),
                                                                 f"{item_key}.settings")))
    return tuple(exporters)


def _protocols(value: Any, key: str) -> tuple[str, ...]:
    expect(value, list, key, f"a list of protocols ({', '.join(PROTOCOLS)})")
    if not value:
        raise ConfigError(key, "empty: watch at least one protocol")
    chosen = {choice(item, PROTOCOLS, f"{key}[{index}]", what="protocol") for index, item in enumerate(value)}
    return tuple(protocol for protocol in PROTOCOLS if protocol in chosen)


def _networks(value: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """labels.networks: name -> list of CIDRs (IPv4 or IPv6), each a valid network."""
    import ipaddress

    expect(value, dict, "labels.networks", "a mapping of network name to a list of CIDRs")
    networks = []
    for name, cidrs in value.items():
        key = f"labels.networks.{key_name(name)}"
        if not isinstance(name, str) or not name or not name.isprintable():
            raise ConfigError(key, f"a network's name must be a non-empty string, got {show(name)}")
        expect(cidrs, list, key, "a list of CIDRs such as 10.0.0.0/8")
        if not cidrs:
            raise ConfigError(key, "empty: give at least one CIDR")
        for index, cidr in enumerate(cidrs):
            try:
                if not isinstance(cidr, str):
                    raise TypeError(cidr)
                ipaddress.ip_network(cidr, strict=False)
            except (TypeError, ValueError):
                raise ConfigError(f"{key}[{index}]", f"expected a CIDR such as 10.0.0.0/8, got {show(cidr)}") from None
        networks.append((name, tuple(str(cidr) for cidr in cidrs)))
    return tuple(networks)


def _capacity(value: Any, key: str) -> int:
    number = positive_int(value, key)
    if number > MAX_CAPACITY:
        raise ConfigError(key, f"at most {MAX_CAPACITY} entries, got {number}")
    return number


def _ringbuf_bytes(value: Any) -> int:
    number = positive_int(value, "events.ringbuf_bytes")
    if number & (number - 1) or not RINGBUF_MIN <= number <= RINGBUF_MAX:
        raise ConfigError("events.ringbuf_bytes", f"expected a power of two from {RINGBUF_MIN} to {RINGBUF_MAX} "
                                                  f"bytes, got {number}")
    return number


def _btf_source(value: Any) -> str:
    expect(value, str, "btf.source", "'auto', 'btf', 'vendored' or a file path")
    if value in BTF_SOURCES:
        return value
    if "/" not in value:
        raise ConfigError("btf.source", f"expected one of {', '.join(BTF_SOURCES)} or a file path, got {show(value)}")
    _existing_path(value, "btf.source", "BTF or vendored table file")
    return value


def _extra_probes(value: Any) -> tuple[str, ...]:
    """extra_probes: each a file or module that loads, whose probes add to gespann's without a clash."""
    from .collector.catalogue import catalogue
    from .probes import ExtensionError, available_probes

    expect(value, list, "extra_probes", "a list of Python files or module names, each declaring PROBE or PROBES")
    sources: list[str] = []
    for index, source in enumerate(value):
        key = f"extra_probes[{index}]"
        expect(source, str, key, "a Python file (.py) or a module name")
        try:
            available_probes(tuple(sources) + (source,))
        except ExtensionError as err:
            raise ConfigError(key, str(err)) from None
        sources.append(source)
    try:
        catalogue(available_probes(tuple(sources)))
    except ValueError as err:
        raise ConfigError("extra_probes", str(err)) from None
    return tuple(sources)


def _probe_modes(value: Any, protocols: tuple[str, ...], extra_probes: tuple[str, ...] = ()) -> dict[str, str]:
    """attach.probes: each name a probe that gespann attaches, each mode one of that probe's flavours."""
    from .probes import available_probes  # the probes declare their flavours; config only checks against them

    expect(value, dict, "attach.probes", "a mapping of probe name to attach mode")
    probes = {probe.name: probe for probe in available_probes(extra_probes)}
    modes = {}
    for name, mode in value.items():
        key = f"attach.probes.{key_name(name)}"
        probe = probes.get(name) if isinstance(name, str) else None
        if probe is None:
            raise ConfigError(key, f"no probe is called {show(name)}; the probes are: {', '.join(probes)}")
        if not probe.watches(protocols):
            raise ConfigError(key, f"probe {name} watches {probe.protocol}, which scope.protocols leaves out")
        flavours = tuple(flavour.mode for flavour in probe.flavours)
        if mode is False:  # YAML reads an unquoted off as false
            mode = "off"
        if mode not in ("auto", "off") and (not isinstance(mode, str) or mode not in flavours):
            raise ConfigError(key, f"probe {name} has no {show(mode)} flavour; its flavours are: "
                                   f"auto, {', '.join(flavours)} (or off, to leave it out)")
        modes[name] = mode
    return modes


def _namespace_file(value: Any, key: str) -> str | None:
    if value is None:
        return None
    expect(value, str, key, "a namespace file path such as /proc/1/ns/net")
    _existing_path(value, key, "namespace file")
    return value


def _existing_path(value: str, key: str, what: str) -> None:
    try:
        os.stat(value)
    except (OSError, ValueError) as err:  # ValueError: an embedded NUL
        reason = err.strerror if isinstance(err, OSError) else str(err)
        raise ConfigError(key, f"cannot use {what} {show(value)}: {reason}") from None


def _given(mapping: dict, name: str, default: Any) -> Any:
    """mapping[name], where an empty value (`name:` alone, YAML's null) means the default."""
    value = mapping.get(name)
    return default if value is None else value


def _section(document: dict, name: str) -> dict:
    """The mapping under `name`, holding only the keys KEYS lists under it."""
    section = _given(document, name, {})
    expect(section, dict, name, "a mapping")
    reject_unknown(section, KEYS.under(name), name)
    return section
