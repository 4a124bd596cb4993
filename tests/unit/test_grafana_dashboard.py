"""The Grafana dashboard in deploy/grafana/ charts exactly the metrics the daemons export.

Metric names come from the prometheus_client collectors defined in
interlink_provider/telemetry/metrics.py, so a metric added there fails here until a panel charts it,
and a panel querying a renamed or removed metric fails here instead of showing "No data".
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest
from prometheus_client.metrics import MetricWrapperBase

from interlink_provider.telemetry import metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "interlink-provider.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
METRIC_TOKEN = re.compile(r"\bilp_[a-z_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def _defined() -> dict[str, str]:
    """Exported metric name -> type, for every collector metrics.py defines at module level."""
    found: dict[str, str] = {}
    for value in vars(metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        for family in value.describe():
            name, kind = family.name, family.type
            if kind == "counter" and not name.endswith("_total"):
                name += "_total"  # prometheus_client strips `_total` from a Counter's family name
            found[name] = kind
    return found


DEFINED = _defined()


def _panels(dashboard: dict) -> list[dict]:
    """Every panel, rows' nested (collapsed) panels included."""
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _chart_panels(dashboard: dict) -> list[dict]:
    return [p for p in _panels(dashboard) if p["type"] != "row"]


def _exprs(dashboard: dict) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in _chart_panels(dashboard) for t in p.get("targets", [])]


def _metric(token: str) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        base = token.removesuffix(suffix)
        if base != token and DEFINED.get(base) == "histogram":
            return base
    return token


def _used(dashboard: dict) -> dict[str, set[str]]:
    used: dict[str, set[str]] = {}
    for title, expr in _exprs(dashboard):
        for token in METRIC_TOKEN.findall(expr):
            used.setdefault(_metric(token), set()).add(title)
    return used


def test_the_metrics_module_was_read():
    assert len(DEFINED) >= 10, DEFINED
    assert DEFINED["ilp_pods"] == "gauge"
    assert DEFINED["ilp_request_seconds"] == "histogram"
    assert DEFINED["ilp_creates_total"] == "counter"
    assert all(name.startswith("ilp_") for name in DEFINED)


def test_the_file_is_deterministic_pretty_printed_json(dashboard):
    assert DASHBOARD.read_text() == json.dumps(dashboard, indent=2) + "\n"
    assert dashboard["schemaVersion"] == 39
    assert dashboard["uid"] and dashboard["title"]


def test_every_queried_metric_is_defined(dashboard):
    unknown = {name: sorted(titles) for name, titles in _used(dashboard).items() if name not in DEFINED}
    assert not unknown, f"panels query metrics metrics.py does not define: {unknown}"


def test_every_defined_metric_is_charted(dashboard):
    missing = sorted(set(DEFINED) - set(_used(dashboard)))
    assert not missing, f"metrics.py defines metrics no panel charts: {missing}"


def test_histograms_are_queried_through_their_series(dashboard):
    """A histogram has no series under its bare name: only _bucket, _sum and _count exist."""
    for title, expr in _exprs(dashboard):
        for token in METRIC_TOKEN.findall(expr):
            assert DEFINED.get(token) != "histogram", f"{title}: {token} has no bare series, query {token}_bucket"


def test_panel_ids_are_unique(dashboard):
    ids = [p["id"] for p in _panels(dashboard)]
    assert all(isinstance(i, int) for i in ids)
    assert len(ids) == len(set(ids)), sorted(ids)


def test_panels_do_not_overlap_and_fit_the_grid(dashboard):
    boxes = []
    for panel in _panels(dashboard):
        g = panel["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["y"] >= 0, panel["title"]
        assert g["x"] + g["w"] <= 24, f"{panel['title']} is wider than the 24-column grid"
        boxes.append((panel["title"], g))
    for (a, ga), (b, gb) in itertools.combinations(boxes, 2):
        apart = (
            ga["x"] + ga["w"] <= gb["x"]
            or gb["x"] + gb["w"] <= ga["x"]
            or ga["y"] + ga["h"] <= gb["y"]
            or gb["y"] + gb["h"] <= ga["y"]
        )
        assert apart, f"panels {a!r} {ga} and {b!r} {gb} overlap"


def test_every_target_uses_the_templated_datasource(dashboard):
    for panel in _chart_panels(dashboard):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_every_panel_says_what_to_look_for(dashboard):
    for panel in _chart_panels(dashboard):
        assert len(panel.get("description", "")) > 20, panel["title"]


def test_the_variables(dashboard):
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    site = variables["site"]
    assert site["type"] == "query" and site["datasource"] == DATASOURCE
    assert site["definition"] == "label_values(ilp_pods, site)"
    for variable in variables.values():  # variable queries name defined metrics too
        if variable["type"] == "query":
            for token in METRIC_TOKEN.findall(variable["definition"]):
                assert _metric(token) in DEFINED, (variable["name"], token)
    for title, expr in _exprs(dashboard):  # every query is narrowed by the variables
        assert "$job" in expr and "$instance" in expr, title
