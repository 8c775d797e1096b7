"""Checks of configured values, shared by the config and by the exporter kinds that declare their settings.

Every check takes a value from the YAML document and its dotted key
(``exporters[0].settings.port``), and returns the value as gespann uses it or
raises ConfigError naming that key. Nothing here imports the rest of gespann,
so any layer may declare its settings with these checks.
"""

from __future__ import annotations

import math
import reprlib
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping


class ConfigError(ValueError):
    """A configuration problem, located by its dotted key (``exporters[0].settings.port``).

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


def show(value: Any) -> str:
    """A value from the file as an error shows it: one line, at most _SHOWN characters."""
    text = _BRIEF.repr(value)
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN - 3]}..."


def key_name(name: Any) -> str:
    """A mapping key as part of a dotted key: plain names as they are, anything else as a literal."""
    if isinstance(name, str) and name and name.isprintable() and not any(c in name for c in " .[]"):
        return name
    return show(name)


def expect(value: Any, kind: type, key: str, description: str) -> None:
    if not isinstance(value, kind):
        raise ConfigError(key, f"expected {description}, got {type(value).__name__} {show(value)}")


def reject_unknown(mapping: dict, known: Iterable[str], prefix: str) -> None:
    known = tuple(known)
    for name in mapping:
        if name not in known:
            key = f"{prefix}.{key_name(name)}" if prefix else key_name(name)
            raise ConfigError(key, f"unknown key; expected one of: {', '.join(known)}")


def choice(value: Any, choices: Iterable[str], key: str, what: str = "value") -> str:
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(key, f"unknown {what} {show(value)}; expected one of: {', '.join(choices)}")
    return value


def flag(value: Any, key: str) -> bool:
    expect(value, bool, key, "true or false")
    return value


def positive_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(key, f"expected a whole number of at least 1, got {show(value)}")
    return value


def seconds(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ConfigError(key, f"expected a positive number of seconds, got {show(value)}")
    return float(value)


def port(value: Any, key: str) -> int:
    """Ports come as ints or, in the original gespann's format, as strings of digits."""
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise ConfigError(key, f"expected a port number, got {show(value)}")
    if not 1 <= number <= 65535:
        raise ConfigError(key, f"port must be between 1 and 65535, got {show(value)}")
    return number


def string(description: str):
    """A check for any string (an empty one included)."""

    def any_string(value: Any, key: str) -> str:
        expect(value, str, key, description)
        return value

    return any_string


def text(description: str):
    """A check for a non-empty string without control characters (which no address, path or URL holds)."""

    def printable(value: Any, key: str) -> str:
        expect(value, str, key, description)
        if not value or not value.isprintable():
            raise ConfigError(key, f"expected {description}, got {show(value)}")
        return value

    return printable


def host_port(value: Any, key: str) -> str:
    """`host:port` (an IPv6 host in brackets), returned as given."""
    expect(value, str, key, "a string 'host:port'")
    host, _, number = value.rpartition(":")
    if not host:
        raise ConfigError(key, f"expected 'host:port', got {show(value)}")
    port(number, key)
    return value


def tag_list(value: Any, key: str) -> list[str]:
    """Tags as `["env:prod", ...]` or `{env: prod, ...}`, returned as a list of `key:value` strings."""
    if isinstance(value, dict):
        return [f"{name}:{tag}" for name, tag in value.items()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(tag, str) for tag in value):
        raise ConfigError(key, f"expected a list of 'key:value' strings or a mapping, got {show(value)}")
    return list(value)


def readable_file(description: str):
    """A check for a path to a file this process can read now: a typo or a permission fails at start-up,
    naming its key, not at the first request that needs the file."""

    def readable(value: Any, key: str) -> str:
        path = text(description)(value, key)
        try:
            with open(path, "rb"):
                pass
        except OSError as err:
            raise ConfigError(key, f"cannot read {show(path)}: {err.strerror or err}") from None
        return path

    return readable


@dataclass(frozen=True)
class Key:
    """One key of the config file (exporter settings aside: each exporter kind declares its own).

    The parser takes its default and choices from here, and docs/config.md is
    generated from the same table, so what the docs list is what is accepted.
    `values` says what it takes where `choices` cannot (a number, a path).
    """

    path: str  # dotted: section.name, or a top-level name
    doc: str
    default: Any = None
    choices: tuple[str, ...] = ()
    values: str = ""

    @property
    def section(self) -> str:
        """The top-level key it is under (itself when it is one)."""
        return self.path.split(".", 1)[0]

    @property
    def name(self) -> str:
        """Its name within its section."""
        return self.path.rsplit(".", 1)[-1]


class Keys(Mapping[str, Key]):
    """A config's keys by dotted path, in the order the file's sections and their keys are listed."""

    def __init__(self, *keys: Key):
        self._keys = {key.path: key for key in keys}

    def __getitem__(self, path: str) -> Key:
        return self._keys[path]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def top_level(self) -> tuple[str, ...]:
        """The names a file may have at its top, in order."""
        return tuple(dict.fromkeys(key.section for key in self._keys.values()))

    def under(self, section: str) -> tuple[str, ...]:
        """The names the mapping `section` may hold, in order."""
        return tuple(key.name for key in self._keys.values() if key.section == section and key.path != section)
