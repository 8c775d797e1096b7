"""Exporter kinds: what each exporter module declares once, and the registry that lists them.

An `ExporterKind` is everything the rest of gespann knows about one kind of
exporter: its type name (`type:` in the config), its settings (each with its
check, default and help: the config validates and reports errors from them),
whether it consumes connection events (so that `gespann run` asks the probes
for records), how its settings depend on each other, and how to build it from
validated settings.

Adding an exporter is one module declaring `KIND = ExporterKind(...)` and one
`KINDS.register(...)` line in `exporters/__init__.py`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence

from gespann.collector import Collector
from gespann.settings import ConfigError, expect, reject_unknown

from .base import Exporter, ExporterError, SelfMetricSource


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: The default of a setting the config must give.
REQUIRED: Any = _Required()


@dataclasses.dataclass(frozen=True)
class Setting:
    """One key under an exporter's `settings:`.

    `check(value, key)` gives the value as the exporter uses it, or raises
    ConfigError naming `key`. `default` is used when the key is absent or
    empty (YAML null): REQUIRED makes it an error; None leaves it out, for the
    exporter to decide when it is built.
    """

    name: str
    check: Callable[[Any, str], Any]
    help: str
    default: Any = None


@dataclasses.dataclass(frozen=True)
class ExporterConfig:
    """One configured exporter: its kind's type name and its validated settings, defaults filled in."""

    type: str
    settings: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class BuildContext:
    """What a kind's `build` gets besides its settings.

    `self_metric_sources` holds every exporter of this config that counts its
    own trouble (SelfMetricSource); it is complete once every exporter is
    built, so an exporter showing them reads it when it serves, not when built.
    """

    collector: Collector
    self_metric_sources: Sequence[SelfMetricSource] = ()


@dataclasses.dataclass(frozen=True)
class ExporterKind:
    type: str
    help: str
    settings: tuple[Setting, ...]
    build: Callable[[Mapping[str, Any], BuildContext], Exporter]
    #: Whether it reads the collector's connection events (the probes then send records).
    consumes_events: bool = False
    #: Checks of settings that only make sense together, given the validated settings and their key;
    #: raises ConfigError naming the setting at fault.
    check_together: Optional[Callable[[Mapping[str, Any], str], None]] = None

    def validate(self, settings: Any, key: str) -> dict[str, Any]:
        """`settings` from the config, checked key by key, with the defaults filled in."""
        expect(settings, dict, key, "a mapping")
        reject_unknown(settings, (setting.name for setting in self.settings), key)
        validated = {}
        for setting in self.settings:
            value = settings.get(setting.name)
            if value is not None:
                validated[setting.name] = setting.check(value, f"{key}.{setting.name}")
            elif setting.default is REQUIRED:
                raise ConfigError(f"{key}.{setting.name}", "missing")
            elif setting.default is not None:
                validated[setting.name] = setting.default
        if self.check_together is not None:
            self.check_together(validated, key)
        return validated


class Registry:
    """The exporter kinds gespann knows, by type name, in registration order."""

    def __init__(self) -> None:
        self._kinds: dict[str, ExporterKind] = {}

    def register(self, kind: ExporterKind) -> ExporterKind:
        if kind.type in self._kinds:
            raise ValueError(f"exporter type {kind.type!r} is registered already")
        self._kinds[kind.type] = kind
        return kind

    def remove(self, type_name: str) -> None:
        del self._kinds[type_name]

    def __getitem__(self, type_name: str) -> ExporterKind:
        try:
            return self._kinds[type_name]
        except KeyError:
            raise ExporterError(f"no exporter of type {type_name!r}; the types are: {', '.join(self)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._kinds))

    def __contains__(self, type_name: object) -> bool:
        return type_name in self._kinds

    def consume_events(self, configured: Iterable[ExporterConfig]) -> bool:
        """Whether any of these exporters reads connection events."""
        return any(self[item.type].consumes_events for item in configured)

    def build(self, configured: Sequence[ExporterConfig], collector: Collector) -> list[Exporter]:
        """One exporter per configured one, in order; none is started yet."""
        sources: list[SelfMetricSource] = []
        context = BuildContext(collector, sources)
        built = [self[item.type].build(item.settings, context) for item in configured]
        sources.extend(exporter for exporter in built if isinstance(exporter, SelfMetricSource))
        return built
