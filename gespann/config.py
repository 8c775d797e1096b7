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

from .exporters import KINDS, ExporterConfig
from .settings import (ConfigError, choice, expect, flag, key_name, positive_int, reject_unknown, seconds,
                       show)
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
ATTACH_MODES = ("auto", "tp_btf", "raw_tracepoint", "tracepoint", "kprobe", "fentry")
BTF_SOURCES = ("auto", "btf", "vendored")
#: limits.<map>: the kernel maps whose capacity the config sets (each a probe's map name).
LIMITS = ("tcp_connections", "udp_flows", "tcp_peers")
#: The largest capacity accepted: 2^24 entries is already about 2 GiB of kernel memory for these maps.
MAX_CAPACITY = 1 << 24


def _default_exporters() -> tuple[ExporterConfig, ...]:
    return _exporters(list(DEFAULT_EXPORTERS), EXPORTERS_KEY)


@dataclasses.dataclass(frozen=True)
class Config:
    log_level: str = "info"
    exporters: tuple[ExporterConfig, ...] = dataclasses.field(default_factory=_default_exporters)
    #: Which reader carries records out of the kernel: the ring buffer (5.8+) or the perf event array.
    event_reader: str = "auto"
    #: Which flavour every probe attaches with ("auto": the first the kernel accepts).
    attach_mode: str = "auto"
    #: Per-probe attach modes, over `attach_mode`.
    probe_modes: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: How tracepoint and kprobe programs attach to their perf event: a bpf_link (5.15+) or the ioctl.
    perf_event_attach: str = "auto"
    #: How open connections are read at a collection: the kernel walks where they run, or in user space.
    open_connections: str = "auto"
    #: Where kernel type information comes from: running kernel's BTF, vendored tables, or a file.
    btf_source: str = "auto"
    #: A network-namespace file (/proc/PID/ns/net, /run/netns/NAME): watch only that namespace.
    netns: str | None = None
    #: The protocols watched. UDP's probes run on every packet, TCP's included: a host that
    #: needs no UDP figures saves that cost by leaving it out.
    protocols: tuple[str, ...] = PROTOCOLS
    #: Probes from outside gespann's tree: Python files or modules that declare PROBE or PROBES.
    extra_probes: tuple[str, ...] = ()
    #: Seconds without payload after which an open connection counts as idle (the idle gauge).
    idle_timeout: float = 60.0
    #: Seconds without a datagram after which a UDP flow ends (and is reported as closed).
    udp_flow_timeout: float = 120.0
    #: Opt-in labels on the per-process metrics: by process name (comm), by container id.
    label_process: bool = False
    label_container: bool = False
    #: Most label sets each per-process metric gets; beyond it, connections count under "other".
    label_max_series: int = 100
    #: Opt-in TCP figures by peer (remote endpoint of a client, local port of a server), capped by
    #: limits.tcp_peers; remote addresses grouped by the named networks (name -> CIDRs).
    label_peers: bool = False
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
    reject_unknown(document, ("log_level", EXPORTERS_KEY, OLDER_EXPORTERS_KEY, "events", "attach", "btf", "scope",
                              "connections", "labels", "limits", "extra_probes"), "")
    log_level = choice(_given(document, "log_level", "info"), LOG_LEVELS, "log_level")
    exporters_key, deprecations = _exporters_key(document)
    exporters = _exporters(_given(document, exporters_key, list(DEFAULT_EXPORTERS)), exporters_key)
    events = _section(document, "events", ("reader",))
    attach = _section(document, "attach", ("mode", "probes", "perf_event", "open_connections"))
    btf = _section(document, "btf", ("source",))
    scope = _section(document, "scope", ("netns", "protocols"))
    connections = _section(document, "connections", ("idle_timeout", "udp_flow_timeout"))
    label_section = _section(document, "labels", ("process", "container", "max_series", "peers", "networks"))
    limits = _section(document, "limits", LIMITS)
    protocols = _protocols(_given(scope, "protocols", list(PROTOCOLS)), "scope.protocols")
    extra_probes = _extra_probes(_given(document, "extra_probes", []))
    return Config(
        log_level=log_level,
        exporters=exporters,
        event_reader=choice(_given(events, "reader", "auto"), EVENT_READERS, "events.reader"),
        attach_mode=choice(_given(attach, "mode", "auto"), ATTACH_MODES, "attach.mode", what="attach mode"),
        probe_modes=_probe_modes(_given(attach, "probes", {}), protocols, extra_probes),
        perf_event_attach=choice(_given(attach, "perf_event", "auto"), PERF_EVENT_ATTACH, "attach.perf_event"),
        open_connections=choice(_given(attach, "open_connections", "auto"), OPEN_CONNECTIONS,
                                "attach.open_connections"),
        btf_source=_btf_source(_given(btf, "source", "auto")),
        netns=_namespace_file(scope.get("netns"), "scope.netns"),
        protocols=protocols,
        extra_probes=extra_probes,
        idle_timeout=seconds(_given(connections, "idle_timeout", Config.idle_timeout), "connections.idle_timeout"),
        udp_flow_timeout=seconds(_given(connections, "udp_flow_timeout", Config.udp_flow_timeout),
                                 "connections.udp_flow_timeout"),
        label_process=flag(_given(label_section, "process", False), "labels.process"),
        label_container=flag(_given(label_section, "container", False), "labels.container"),
        label_max_series=positive_int(_given(label_section, "max_series", Config.label_max_series), "labels.max_series"),
        label_peers=flag(_given(label_section, "peers", False), "labels.peers"),
        label_networks=_networks(_given(label_section, "networks", {})),
        map_capacities={name: _capacity(limits[name], f"limits.{name}") for name in LIMITS
                        if limits.get(name) is not None},
        deprecations=deprecations,
    )


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


def _section(document: dict, name: str, known: tuple[str, ...]) -> dict:
    section = _given(document, name, {})
    expect(section, dict, name, "a mapping")
    reject_unknown(section, known, name)
    return section
