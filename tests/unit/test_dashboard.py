"""The Grafana dashboard (deploy/grafana): every query names metrics the product exports (the
catalog), every panel has a title and a datasource Grafana is provisioned with; and the PromQL
tokenizer those checks rely on (tests/promql.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from featurestream.udfs.telemetry.catalog import by_series
from tests.promql import metric_names, series_name

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "featurestream.json"
# A query variable's label_values(<selector>, <label>): the selector holds the metric.
LABEL_VALUES = re.compile(r"label_values\((?P<selector>.*),\s*\w+\s*\)")

# -- the tokenizer


@pytest.mark.parametrize(("expr", "names"), [
    ("up", {"up"}),
    ('rate(x_total{job="a", le="0.5"}[5m])', {"x_total"}),
    ("histogram_quantile(0.99, sum by (route, le) (rate(h_bucket[$__rate_interval])))",
     {"h_bucket"}),
    ("sum(rate(a[1m])) by (reason) / ignoring(reason) group_left sum(rate(b[1m]))", {"a", "b"}),
    ("a and on (model, version) b >= 500", {"a", "b"}),
    ("a unless b or c", {"a", "b", "c"}),
    ("a > bool 1e3 * 0x1F", {"a"}),
    ("a offset 1h30m", {"a"}),
    ("sum without (instance) (a) / count by(x)(b)", {"a", "b"}),
    ('a{route=~"/v1/(features|scores)/.+", route!~".*/batch"}', {"a"}),
    ('sum(a{model=~"$model"}) / sum(b{model=~"${model:regex}"})', {"a", "b"}),
    ("topk($n, a:recorded_rule)", {"a:recorded_rule"}),
    ("deriv(a[10m:1m]) > Inf", {"a"}),
    ("vector(1) + scalar(a)", {"a"}),
    ('label_replace(a, "dst", "$1", "src", "(.*)")', {"a"}),
])
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_series_name() -> None:
    assert series_name('x_bucket{le="+Inf", a="{b}"}') == "x_bucket"
    assert series_name("x") == "x"


# -- the dashboard


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and query variable."""
    for panel in panels(board):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            found = LABEL_VALUES.fullmatch(text)
            assert found, f"variable {variable['name']}: {text}"
            yield f"${variable['name']}", found["selector"]


def test_every_query_names_cataloged_metrics() -> None:
    unknown: dict[str, str] = {}
    for where, expr in queries(dashboard()):
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr}"
        unknown |= {name: where for name in names if by_series(name) is None}
    assert not unknown, f"not in udfs/telemetry/catalog.py: {unknown}"


def test_panels_have_titles_and_provisioned_datasources() -> None:
    provisioned = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uids = {source["uid"] for source in provisioned["datasources"]}
    board = dashboard()
    sources = [variable["datasource"] for variable in board["templating"]["list"]]
    for panel in panels(board):
        assert panel.get("title", "").strip(), f"panel {panel['id']} has no title"
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            sources += [panel["datasource"], *(t["datasource"] for t in panel["targets"])]
    assert {source["uid"] for source in sources} <= uids


def test_panel_ids_are_unique() -> None:
    ids = [panel["id"] for panel in panels(dashboard())]
    assert len(ids) == len(set(ids))
