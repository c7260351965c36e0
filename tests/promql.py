"""The metric names a PromQL expression reads, for checking rules and dashboards against the
metric catalog (``featurestream.udfs.telemetry.catalog``), and the queries of a Grafana
dashboard.

Not a PromQL parser: a tokenizer that knows just enough of the grammar to tell a metric name
from everything else that looks like an identifier -- function and aggregation names (followed
by ``(``), keywords and binary operators, label names and values (inside ``{...}`` and the
``by``/``without``/``on``/``ignoring``/``group_left``/``group_right`` lists), range and offset
durations, numbers, and Grafana's ``$variables``. tests/unit/test_dashboard.py tests it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# Words PromQL gives a meaning (any case) that may stand without a "(" after them.
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2",
                      "group_left", "group_right"})

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_LABEL_LIST = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
# A query variable's label_values(<selector>, <label>): the selector holds the metric.
_LABEL_VALUES = re.compile(r"label_values\((?P<selector>.*),\s*\w+\s*\)")
# A number (durations too: "offset 5m") before an identifier, so "1e3" or "5m" is not a name.
_TOKEN = re.compile(
    r"(?P<number>0x[0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:ms|[smhdwy])?)"
    r"|(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<call>\s*\()?")


def metric_names(expr: str) -> set[str]:
    """Every metric name ``expr`` selects, as written (a histogram's ``x_bucket`` stays
    ``x_bucket``: the catalog lists the series each family is scraped as)."""
    text = _STRING.sub('""', expr)
    text = _GRAFANA_VARIABLE.sub("1", text)
    text = _LABEL_LIST.sub(" ", text)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    return {m["name"] for m in _TOKEN.finditer(text)
            if m["name"] and not m["call"] and m["name"].lower() not in KEYWORDS}


def series_name(series: str) -> str:
    """The metric name of a promtool input series such as ``x_total{reason="a"}``."""
    return series.split("{", 1)[0].strip()



@dataclass(frozen=True)
class DashboardQuery:
    """One PromQL query of a dashboard: ``where`` is its panel's title and the target's refId,
    or ``$variable``."""

    where: str
    expr: str


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of a Grafana dashboard, those inside collapsed rows too."""
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries(board: dict[str, Any]) -> Iterator[DashboardQuery]:
    """Every panel target's query, and each query variable's ``label_values`` selector (a
    variable that is not ``label_values(...)`` is an error: its metric could not be found)."""
    for panel in panels(board):
        for target in panel.get("targets", []):
            yield DashboardQuery(f"{panel['title']} {target['refId']}", target["expr"])
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            found = _LABEL_VALUES.fullmatch(text)
            if found is None:
                raise ValueError(f"variable {variable['name']}: {text} is not label_values()")
            yield DashboardQuery(f"${variable['name']}", found["selector"])
