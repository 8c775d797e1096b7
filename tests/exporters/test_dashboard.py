"""monitoring/grafana-dashboard.json: every query runs without error on a real Prometheus and returns numbers."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

DASHBOARD = Path(__file__).resolve().parents[2] / "monitoring" / "grafana-dashboard.json"

#: Grafana's variables as a dashboard user would have them: all instances, a one-minute rate window.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$instance": ".*"}


def _panels(panels: list) -> list:
    return [inner for panel in panels for inner in (panel, *_panels(panel.get("panels", [])))]


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _expressions() -> list[str]:
    return [target["expr"] for panel in _panels(_dashboard()["panels"]) for target in panel.get("targets", [])]


def _as_grafana_sends_it(expression: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expression = expression.replace(variable, value)
    assert "$" not in expression, f"a Grafana variable the test does not know: {expression}"
    return expression


def test_panels_are_well_formed():
    panels = _panels(_dashboard()["panels"])
    assert len({panel["id"] for panel in panels}) == len(panels)
    for panel in panels:
        ref_ids = [target["refId"] for target in panel.get("targets", [])]
        assert len(set(ref_ids)) == len(ref_ids), panel["title"]
    assert len(_expressions()) >= 20


@pytest.mark.parametrize("expression", _expressions())
def test_query_returns_numbers(scraped, expression):
    data = scraped.prometheus.query(_as_grafana_sends_it(expression))
    values = [float(item["value"][1]) for item in data["result"]]
    assert any(not math.isnan(value) for value in values), f"no data: {data}"


def test_instance_variable_finds_gespann(scraped):
    for variable in _dashboard()["templating"]["list"]:
        found = re.fullmatch(r"label_values\((\w+), *(\w+)\)", variable.get("definition", ""))
        if found:
            metric, label = found.groups()
            result = scraped.prometheus.query(f"count by ({label}) ({metric})")["result"]
            assert result and all(item["metric"].get(label) for item in result)
