"""The Prometheus text exposition format (version 0.0.4): families in, the page's bytes out.

gespann writes the page itself rather than through prometheus-client: that
library's import pulls in an HTTP client, ssl (and with it libcrypto), email,
wsgiref and more, about 12 MiB of a sidecar's resident memory for a format
that is a few lines of escaping. (It is still imported for TLS, only then.) The output is what Prometheus's own parser
reads, and a test reads it back with prometheus-client's parser.

Rules kept here: a counter's samples end in `_total` (its family is named
with it); histogram series are `_bucket` (with `le`, ending at `+Inf`),
`_count` and `_sum`; HELP escapes backslash and newline; label values
escape backslash, double quote and newline; numbers are written as Go
writes a float64, so a page reads the same as prometheus-client wrote it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence, Union

from gespann.collector import Histogram, Kind, Labels
from gespann.collector.model import Value

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: A family's kind as the TYPE line names it; "untyped" for a family the model has no kind for.
UNTYPED = "untyped"


@dataclass(frozen=True)
class Family:
    """One metric family: its series keyed by model Labels. Every series is written with each of
    `label_names` (empty where it lacks one) and any labels of its own beyond them, sorted by name."""

    name: str
    kind: Union[Kind, str]
    help: str
    series: Mapping[Labels, Value]
    label_names: Sequence[str] = ()


def render(families: Iterable[Family]) -> bytes:
    """The page, every family in the order given, its series sorted by labels."""
    lines: list[str] = []
    for family in families:
        _write_family(lines, family)
    return "".join(lines).encode()


def _write_family(lines: list[str], family: Family) -> None:
    kind = family.kind.value if isinstance(family.kind, Kind) else family.kind
    name = family.name
    if family.kind is Kind.COUNTER and not name.endswith("_total"):
        name += "_total"
    lines.append(f"# HELP {name} {_escape_help(family.help)}\n# TYPE {name} {kind}\n")
    for key, value in sorted(family.series.items()):
        pairs = {label: "" for label in family.label_names}
        pairs.update(key)
        if isinstance(value, Histogram):
            _write_histogram(lines, name, pairs, value)
        else:
            lines.append(f"{name}{_label_text(pairs)} {go_float(value)}\n")


def _write_histogram(lines: list[str], name: str, pairs: dict[str, str], histogram: Histogram) -> None:
    total = 0
    for bound, total in histogram.cumulative():
        lines.append(f"{name}_bucket{_label_text({**pairs, 'le': go_float(bound)})} {go_float(total)}\n")
    lines.append(f"{name}_count{_label_text(pairs)} {go_float(total)}\n"
                 f"{name}_sum{_label_text(pairs)} {go_float(histogram.sum)}\n")


def _label_text(pairs: dict[str, str]) -> str:
    """`{a="1",b="2"}`, labels sorted by name; empty for no labels."""
    if not pairs:
        return ""
    return "{" + ",".join(f'{label}="{_escape_label(pairs[label])}"' for label in sorted(pairs)) + "}"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def go_float(number: Union[int, float]) -> str:
    """`number` as Go's strconv writes a float64: `+Inf`, `-Inf`, `NaN`, `0.005`, `1.0`, `1.2345678e+07`.

    Python's repr is the same shortest round-trip form, except that Go switches to an exponent from
    1e+07 up (a positive number with more than 6 digits before the point); a `le` bound written the
    same way on every scrape is what keeps a bucket one series."""
    value = float(number)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(value)
    point = text.find(".")
    if value > 0 and point > 6 and "e" not in text:
        mantissa = f"{text[0]}.{text[1:point]}{text[point + 1:]}".rstrip("0").rstrip(".")
        return f"{mantissa}e+{point - 1:02d}"
    return text
