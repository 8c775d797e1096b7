"""gespann's YAML configuration: parsed once, validated strictly, every error names its key.

The original gespann's format (``log_level`` plus a list of ``adapters``) is accepted
unchanged; the other sections are gespann's own and all optional.
"""

from __future__ import annotations

import dataclasses
import math
import os
import reprlib
from pathlib import Path
from typing import Any, Mapping

import yaml

LOG_LEVELS = ("debug", "info", "warning", "error")
ADAPTER_TYPES = ("prometheus", "datadog", "jsonl")
EVENT_READERS = ("auto", "ringbuf", "perf")
PERF_EVENT_ATTACH = ("auto", "link", "ioctl")
#: attach.open_connections: how a collection reads open connections: a walk in the kernel (probes/tcp_walk.py,
#: probes/udp_walk.py) or in user space (a sock_diag dump for TCP, a pass over the flow map for UDP).
OPEN_CONNECTIONS = ("auto", "kernel_walk", "user_space")
ATTACH_MODES = ("auto", "tp_btf", "raw_tracepoint", "tracepoint", "kprobe", "fentry")
BTF_SOURCES = ("auto", "btf", "vendored")
PROTOCOLS = ("tcp", "udp")
#: limits.<map>: the kernel maps whose capacity the config sets (each a probe's map name).
LIMITS = ("tcp_connections", "udp_flows")
#: The largest capacity accepted: 2^24 entries is already about 2 GiB of kernel memory for these maps.
MAX_CAPACITY = 1 << 24


class ConfigError(ValueError):
    """A configuration problem, located by its dotted key (``adapters[0].settings.port``).

    Its message is always one line: keys and values from the file are shown as
    Python literals (newlines escaped) and long ones are cut.
    """

    def __init__(self, key: str, problem: str):
        problem = " ".join(problem.splitlines())
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


#: The longest value shown in an error, in characters.
_SHOWN = 60
#: Shows values from the file briefly: a few levels deep, a few items wide (a recursive alias included).
_BRIEF = reprlib.Repr()
_BRIEF.maxlevel, _BRIEF.maxstring, _BRIEF.maxother = 3, _SHOWN, _SHOWN


def _show(value: Any) -> str:
    """A value from the file as an error shows it: one line, at most _SHOWN characters."""
    text = _BRIEF.repr(value)
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN - 3]}..."


def _key_name(name: Any) -> str:
    """A mapping key as part of a dotted key: plain names as they are, anything else as a literal."""
    if isinstance(name, str) and name and name.isprintable() and not any(c in name for c in " .[]"):
        return name
    return _show(name)


@dataclasses.dataclass(frozen=True)
class Adapter:
    type: str
    settings: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Config:
    log_level: str = "info"
    adapters: tuple[Adapter, ...] = (Adapter("prometheus", {"port": 8080}),)
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
    #: Seconds without payload after which an open connection counts as idle (the idle gauge).
    idle_timeout: float = 60.0
    #: Seconds without a datagram after which a UDP flow ends (and is reported as closed).
    udp_flow_timeout: float = 120.0
    #: Opt-in labels on the per-process metrics: by process name (comm), by container id.
    label_process: bool = False
    label_container: bool = False
    #: Most label sets each per-process metric gets; beyond it, connections count under "other".
    label_max_series: int = 100
    #: Kernel map capacities, by map (limits.tcp_connections, limits.udp_flows); absent: the probes' defaults.
    map_capacities: Mapping[str, int] = dataclasses.field(default_factory=dict)


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
    _expect(document, dict, "(top level)", "a mapping")
    _reject_unknown(document, ("log_level", "adapters", "events", "attach", "btf", "scope", "connections", "labels",
                               "limits"), "")
    log_level = _choice(_given(document, "log_level", "info"), LOG_LEVELS, "log_level")
    adapters = Config.adapters
    if document.get("adapters") is not None:
        adapters = _adapters(document["adapters"])
    events = _section(document, "events", ("reader",))
    attach = _section(document, "attach", ("mode", "probes", "perf_event", "open_connections"))
    btf = _section(document, "btf", ("source",))
    scope = _section(document, "scope", ("netns", "protocols"))
    connections = _section(document, "connections", ("idle_timeout", "udp_flow_timeout"))
    label_section = _section(document, "labels", ("process", "container", "max_series"))
    limits = _section(document, "limits", LIMITS)
    protocols = _protocols(_given(scope, "protocols", list(PROTOCOLS)), "scope.protocols")
    return Config(
        log_level=log_level,
        adapters=adapters,
        event_reader=_choice(_given(events, "reader", "auto"), EVENT_READERS, "events.reader"),
        attach_mode=_choice(_given(attach, "mode", "auto"), ATTACH_MODES, "attach.mode", what="attach mode"),
        probe_modes=_probe_modes(_given(attach, "probes", {}), protocols),
        perf_event_attach=_choice(_given(attach, "perf_event", "auto"), PERF_EVENT_ATTACH, "attach.perf_event"),
        open_connections=_choice(_given(attach, "open_connections", "auto"), OPEN_CONNECTIONS,
                                 "attach.open_connections"),
        btf_source=_btf_source(_given(btf, "source", "auto")),
        netns=_namespace_file(scope.get("netns"), "scope.netns"),
        protocols=protocols,
        idle_timeout=_seconds(_given(connections, "idle_timeout", Config.idle_timeout), "connections.idle_timeout"),
        udp_flow_timeout=_seconds(_given(connections, "udp_flow_timeout", Config.udp_flow_timeout),
                                  "connections.udp_flow_timeout"),
        label_process=_flag(_given(label_section, "process", False), "labels.process"),
        label_container=_flag(_given(label_section, "container", False), "labels.container"),
        label_max_series=_positive_int(_given(label_section, "max_series", Config.label_max_series), "labels.max_series"),
        map_capacities={name: _capacity(limits[name], f"limits.{name}") for name in LIMITS
                        if limits.get(name) is not None},
    )


def _adapters(value: Any) -> tuple[Adapter, ...]:
    _expect(value, list, "adapters", "a list")
    adapters = []
    for index, item in enumerate(value):
        key = f"adapters[{index}]"
        _expect(item, dict, key, "a mapping with 'type' and 'settings'")
        _reject_unknown(item, ("type", "settings"), key)
        if "type" not in item:
            raise ConfigError(f"{key}.type", "missing")
        kind = _choice(item["type"], ADAPTER_TYPES, f"{key}.type", what="adapter type")
        settings = _given(item, "settings", {})
        _expect(settings, dict, f"{key}.settings", "a mapping")
        adapters.append(Adapter(kind, _adapter_settings(kind, settings, f"{key}.settings")))
    return tuple(adapters)


def _adapter_settings(kind: str, settings: dict, key: str) -> dict:
    if kind == "prometheus":
        _reject_unknown(settings, ("port", "address", "path"), key)
        for name, description in (("address", "an address to listen on, e.g. 0.0.0.0 or ::"),
                                  ("path", "a URL path, e.g. /metrics")):
            if name in settings:
                _printable(settings[name], f"{key}.{name}", description)
        return {**settings, "port": _port(settings.get("port", 8080), f"{key}.port")}
    if kind == "datadog":
        _reject_unknown(settings, ("host", "prefix", "tags", "flush_interval"), key)
        if "host" in settings:  # absent: DataDog's DD_AGENT_HOST / DD_DOGSTATSD_PORT, then localhost:8125
            host = settings["host"]
            _expect(host, str, f"{key}.host", "a string 'host:port'")
            name, _, port = host.rpartition(":")
            if not name:
                raise ConfigError(f"{key}.host", f"expected 'host:port', got {_show(host)}")
            _port(port, f"{key}.host")
        if "prefix" in settings:
            _expect(settings["prefix"], str, f"{key}.prefix", "a metric name prefix")
        _tags(settings.get("tags", ()), f"{key}.tags")
        _seconds(settings.get("flush_interval", 10), f"{key}.flush_interval")
        return dict(settings)
    _reject_unknown(settings, ("path",), key)
    if "path" not in settings:
        raise ConfigError(f"{key}.path", "missing")
    _printable(settings["path"], f"{key}.path", "a file path")
    return dict(settings)


def _printable(value: Any, key: str, description: str) -> None:
    """A non-empty string without control characters (which no address, path or URL holds)."""
    _expect(value, str, key, description)
    if not value or not value.isprintable():
        raise ConfigError(key, f"expected {description}, got {_show(value)}")


def _tags(value: Any, key: str) -> None:
    """DataDog tags: a list of "key:value" strings, or a mapping of key to value."""
    if isinstance(value, dict):
        return
    if not isinstance(value, (list, tuple)) or not all(isinstance(tag, str) for tag in value):
        raise ConfigError(key, f"expected a list of 'key:value' strings or a mapping, got {_show(value)}")


def _port(value: Any, key: str) -> int:
    """Ports come as ints or, in the original format, as strings of digits."""
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        port = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        port = value
    else:
        raise ConfigError(key, f"expected a port number, got {_show(value)}")
    if not 1 <= port <= 65535:
        raise ConfigError(key, f"port must be between 1 and 65535, got {_show(value)}")
    return port


def _protocols(value: Any, key: str) -> tuple[str, ...]:
    _expect(value, list, key, f"a list of protocols ({', '.join(PROTOCOLS)})")
    if not value:
        raise ConfigError(key, "empty: watch at least one protocol")
    chosen = {_choice(item, PROTOCOLS, f"{key}[{index}]", what="protocol") for index, item in enumerate(value)}
    return tuple(protocol for protocol in PROTOCOLS if protocol in chosen)


def _flag(value: Any, key: str) -> bool:
    _expect(value, bool, key, "true or false")
    return value


def _positive_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(key, f"expected a whole number of at least 1, got {_show(value)}")
    return value


def _capacity(value: Any, key: str) -> int:
    number = _positive_int(value, key)
    if number > MAX_CAPACITY:
        raise ConfigError(key, f"at most {MAX_CAPACITY} entries, got {number}")
    return number


def _seconds(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ConfigError(key, f"expected a positive number of seconds, got {_show(value)}")
    return float(value)


def _btf_source(value: Any) -> str:
    _expect(value, str, "btf.source", "'auto', 'btf', 'vendored' or a file path")
    if value in BTF_SOURCES:
        return value
    if "/" not in value:
        raise ConfigError("btf.source", f"expected one of {', '.join(BTF_SOURCES)} or a file path, got {_show(value)}")
    _existing_path(value, "btf.source", "BTF or vendored table file")
    return value


def _probe_modes(value: Any, protocols: tuple[str, ...]) -> dict[str, str]:
    """attach.probes: each name a probe that gespann attaches, each mode one of that probe's flavours."""
    from .probes import ALL_PROBES  # the probes declare their flavours; config only checks against them

    _expect(value, dict, "attach.probes", "a mapping of probe name to attach mode")
    probes = {probe.name: probe for probe in ALL_PROBES}
    modes = {}
    for name, mode in value.items():
        key = f"attach.probes.{_key_name(name)}"
        probe = probes.get(name) if isinstance(name, str) else None
        if probe is None:
            raise ConfigError(key, f"no probe is called {_show(name)}; the probes are: {', '.join(probes)}")
        if probe.protocol not in protocols:
            raise ConfigError(key, f"probe {name} watches {probe.protocol}, which scope.protocols leaves out")
        flavours = tuple(flavour.mode for flavour in probe.flavours)
        if mode != "auto" and (not isinstance(mode, str) or mode not in flavours):
            raise ConfigError(key, f"probe {name} has no {_show(mode)} flavour; its flavours are: "
                                   f"auto, {', '.join(flavours)}")
        modes[name] = mode
    return modes


def _namespace_file(value: Any, key: str) -> str | None:
    if value is None:
        return None
    _expect(value, str, key, "a namespace file path such as /proc/1/ns/net")
    _existing_path(value, key, "namespace file")
    return value


def _existing_path(value: str, key: str, what: str) -> None:
    try:
        os.stat(value)
    except (OSError, ValueError) as err:  # ValueError: an embedded NUL
        reason = err.strerror if isinstance(err, OSError) else str(err)
        raise ConfigError(key, f"cannot use {what} {_show(value)}: {reason}") from None


def _given(mapping: dict, name: str, default: Any) -> Any:
    """mapping[name], where an empty value (`name:` alone, YAML's null) means the default."""
    value = mapping.get(name)
    return default if value is None else value


def _section(document: dict, name: str, known: tuple[str, ...]) -> dict:
    section = _given(document, name, {})
    _expect(section, dict, name, "a mapping")
    _reject_unknown(section, known, name)
    return section


def _choice(value: Any, choices: tuple[str, ...], key: str, what: str = "value") -> str:
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(key, f"unknown {what} {_show(value)}; expected one of: {', '.join(choices)}")
    return value


def _expect(value: Any, kind: type, key: str, description: str) -> None:
    if not isinstance(value, kind):
        raise ConfigError(key, f"expected {description}, got {type(value).__name__} {_show(value)}")


def _reject_unknown(mapping: dict, known: tuple[str, ...], prefix: str) -> None:
    for name in mapping:
        if name not in known:
            key = f"{prefix}.{_key_name(name)}" if prefix else _key_name(name)
            raise ConfigError(key, f"unknown key; expected one of: {', '.join(known)}")
