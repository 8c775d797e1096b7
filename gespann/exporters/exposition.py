"""The Prometheus text exposition format 0.0.4 and OpenMetrics 1.0.0: families in, the page's bytes out.

gespann writes the page itself rather than through prometheus-client: that
library's import pulls in an HTTP client, ssl (and with it libcrypto), email,
wsgiref and more, about 12 MiB of a sidecar's resident memory for a format
that is a few lines of escaping. The output is what Prometheus's own parsers
read, and the tests read both formats back with prometheus-client's parsers.

Which format a scraper gets is negotiated as prometheus-client does it
(`negotiate`): OpenMetrics 1.0.0 when the Accept header names
`application/openmetrics-text` (without a version, or version 1.0.0, and not
with q=0), the text format 0.0.4 otherwise.

Rules kept in both: a counter's samples end in `_total`; histogram series
are `_bucket` (with `le`, ending at `+Inf`), `_count` and `_sum`; label
values escape backslash, double quote and newline; numbers are written as Go
writes a float64, so a page reads the same as prometheus-client wrote it.
The text format names a counter's family with its `_total` and escapes HELP's
backslash and newline. OpenMetrics names the family without `_total`, escapes
double quotes in HELP too, calls an untyped family `unknown`, gives `# UNIT`
where the name ends in a unit (`_seconds`, `_bytes`: gespann's names carry
their unit, gespann.figures.UNITS), and ends with `# EOF`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Optional, Union

from gespann.collector import Histogram, Kind, Labels
from gespann.collector.model import Value
from gespann.figures import UNITS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"

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


@dataclass(frozen=True)
class Format:
    """One exposition format: its media type, as the Content-Type header names it."""

    content_type: str
    openmetrics: bool


TEXT = Format(CONTENT_TYPE, openmetrics=False)
OPENMETRICS = Format(OPENMETRICS_CONTENT_TYPE, openmetrics=True)


def negotiate(accept: str) -> Format:
    """The format an Accept header asks for: OpenMetrics 1.0.0 where it names it, else text 0.0.4."""
    for media_range in accept.split(","):
        media_type, *parameters = (part.strip() for part in media_range.split(";"))
        if media_type.lower() != "application/openmetrics-text":
            continue
        values = dict(_parameter(parameter) for parameter in parameters)
        if values.get("version", "1.0.0") == "1.0.0" and _quality(values.get("q", "1")) > 0:
            return OPENMETRICS
    return TEXT


def render(families: Iterable[Family], format: Format = TEXT) -> bytes:
    """The page, every family in the order given, its series sorted by labels."""
    lines: list[str] = []
    for family in families:
        _write_family(lines, family, format.openmetrics)
    if format.openmetrics:
        lines.append("# EOF\n")
    return "".join(lines).encode()


def unit_of(name: str) -> Optional[str]:
    """The unit a metric's name ends with (before `_total`), if it is one of gespann's units."""
    stem = name.removesuffix("_total")
    return next((unit for unit in UNITS if unit and stem.endswith(f"_{unit}")), None)


def _write_family(lines: list[str], family: Family, openmetrics: bool) -> None:
    kind = family.kind.value if isinstance(family.kind, Kind) else family.kind
    name = family.name
    if family.kind is Kind.COUNTER and not name.endswith("_total"):
        name += "_total"
    if openmetrics:
        header = name[:-len("_total")] if family.kind is Kind.COUNTER else name
        kind = "unknown" if kind == UNTYPED else kind
        lines.append(f"# HELP {header} {_escape_label(family.help)}\n# TYPE {header} {kind}\n")
        unit = unit_of(header)
        if unit:
            lines.append(f"# UNIT {header} {unit}\n")
    else:
        lines.append(f"# HELP {name} {_escape_help(family.help)}\n# TYPE {name} {kind}\n")
    for key, value in sorted(family.series.items()):
        pairs = {label: "" for label in family.label_names}
        pairs.update(key)
        if isinstance(value, Histogram):
            _write_histogram(lines, name, pairs, value)
        else:
            lines.append(f"{name}{_label_text(pairs)} {go_float(value)}\n")


def _parameter(text: str) -> tuple[str, str]:
    name, _, value = text.partition("=")
    return name.strip().lower(), value.strip().strip('"')


def _quality(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0


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


def go_float(number: float) -> str:
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
