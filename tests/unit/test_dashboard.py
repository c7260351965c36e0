"""The Grafana dashboard (deploy/grafana): every query names metrics the product exports (the
catalog), every panel has a title and a datasource Grafana is provisioned with; and the PromQL
tokenizer those checks rely on (tests/promql.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from featurestream.udfs.telemetry.catalog import by_series
from tests.promql import dashboard_queries, metric_names, panels, series_name

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "featurestream.json"

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


def test_every_query_names_cataloged_metrics() -> None:
    unknown: dict[str, str] = {}
    for query in dashboard_queries(dashboard()):
        names = metric_names(query.expr)
        assert names, f"{query.where}: no metric in {query.expr}"
        unknown |= {name: query.where for name in names if by_series(name) is None}
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
