"""The production stack's alert rules (deploy/prometheus): promtool checks them and runs their
unit tests, and every metric they and their tests name is one the product exports."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from featurestream.udfs.telemetry.catalog import by_series
from tests.promql import metric_names, series_name

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "alerts.yml"
RULE_TESTS = PROMETHEUS_DIR / "alerts_test.yml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool in deploy/prometheus; its absence is a failure, not a skip."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: run scripts/setup.sh (it installs it from "
                    "Debian's prometheus package) or put Prometheus' promtool on PATH")
    return subprocess.run([path, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True,
                          timeout=60, check=False)


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def rule_tests() -> list[dict[str, Any]]:
    tests: list[dict[str, Any]] = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    return tests


@pytest.mark.parametrize("args", [("check", "rules", RULES.name),
                                  ("check", "config", "prometheus.yml"),
                                  ("test", "rules", RULE_TESTS.name)],
                         ids=" ".join)
def test_promtool_accepts(args: tuple[str, ...]) -> None:
    result = promtool(*args)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_silent() -> None:
    """Each alert has a case where it fires and one where it stays silent."""
    fired: set[str] = set()
    silent: set[str] = set()
    for case in rule_tests():
        for check in case.get("alert_rule_test", []):
            (fired if check["exp_alerts"] else silent).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - fired == set(), "alerts never tested firing"
    assert names - silent == set(), "alerts never tested silent"


def test_alerts_say_what_to_look_at() -> None:
    for rule in alert_rules():
        annotations = rule["annotations"]
        assert annotations["summary"].strip() and annotations["description"].strip(), rule["alert"]
        assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]


def test_rules_and_their_tests_name_cataloged_metrics() -> None:
    named = {name: "alerts.yml" for rule in alert_rules() for name in metric_names(rule["expr"])}
    named |= {series_name(series["series"]): "alerts_test.yml"
              for case in rule_tests() for series in case["input_series"]}
    unknown = {name: where for name, where in named.items() if by_series(name) is None}
    assert not unknown, f"not in udfs/telemetry/catalog.py: {unknown}"
