"""The Grafana dashboard and the Prometheus alert rules under deploy/ use only metrics the
code exports (core.metrics.METRIC_NAMES, itself checked against a real scrape in
tests/integration/test_job_metrics.py), and the files are well formed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from core.metrics import METRIC_NAMES

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "conveyor-dashboard.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
NAME = re.compile(r"\bconveyor_[a-z0-9_]+")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}


def exported(series: str) -> bool:
    if series in METRIC_NAMES:
        return True
    return any(
        series == name + suffix
        for name, kind in METRIC_NAMES.items()
        for suffix in SUFFIXES.get(kind, ())
    )


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def alert_expressions() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def test_the_dashboard_uses_only_exported_metrics() -> None:
    used = {name for expr in dashboard_expressions() for name in NAME.findall(expr)}
    assert used
    assert {name for name in used if not exported(name)} == set()


def test_the_alert_rules_use_only_exported_metrics() -> None:
    used = {name for expr in alert_expressions() for name in NAME.findall(expr)}
    assert used
    assert {name for name in used if not exported(name)} == set()


def test_every_alert_has_a_name_a_severity_and_a_summary() -> None:
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert re.fullmatch(r"Conveyor[A-Za-z]+", rule["alert"])
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}
            assert rule["annotations"]["summary"]


def test_a_misspelt_metric_would_be_caught() -> None:
    assert not exported("conveyor_jobs_finishd_total")
    assert exported("conveyor_jobs_finished_total")
    assert exported("conveyor_job_run_seconds_bucket")
