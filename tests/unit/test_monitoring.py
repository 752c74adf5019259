"""The monitoring kit speaks of metrics the bridge exports, and its alert rules load and behave as written."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Final

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
HEALTH = ROOT / "src" / "bridge" / "app" / "health.py"
PROMTOOL = shutil.which("promtool")

CONTRACT_METRICS: Final = {
    "bridge_feed_blind_seconds": "counter",
    "bridge_lease_held": "gauge",
    "bridge_journal_bytes": "gauge",
    "bridge_journal_budget_bytes": "gauge",
    "bridge_credential_expires_in_seconds": "gauge",
}
"""Metric families the architecture's contracts name, with their kind, for components that export them
into health.py as they land; a family health.py already exports must be of the same kind."""

DASHBOARD_MUST_SHOW: Final = (
    "bridge_frames_received_total",
    "bridge_rows_committed_total",
    "bridge_commit_latency_seconds_bucket",
    "bridge_feed_blind_seconds_total",
    "bridge_lease_held",
    "bridge_journal_bytes",
    "bridge_journal_budget_bytes",
    "bridge_frames_dead_lettered_total",
    "bridge_credential_expires_in_seconds",
)
ALERTS: Final = {
    "BridgeFeedBlind",
    "BridgeFeedGapsRecorded",
    "BridgeFeedWithoutHolder",
    "BridgeJournalNearBudget",
    "BridgeRefreshTokenExpiring",
    "BridgeAccessTokenNotRefreshed",
    "BridgeDeadLettersRising",
}
PROMQL_WORDS: Final = {"bridge_feed_gaps", "bridge_dead_letters"}
"""Table names that alert texts mention; not metrics."""


def exported_families() -> dict[str, str]:
    """Family name → kind, as health.py builds them (``XMetricFamily("name", …)`` or ``_histogram("name", …)``)."""
    text = HEALTH.read_text()
    families = {
        name: kind.lower() for kind, name in re.findall(r"\b(Counter|Gauge|Histogram)MetricFamily\(\s*\"(\w+)\"", text)
    }
    families |= {name: "histogram" for name in re.findall(r"\b_histogram\(\s*\"(\w+)\"", text)}
    return families


def series_names() -> set[str]:
    """Every series name a scrape can hold: prometheus_client adds ``_total`` to counters, three to histograms."""
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    return {
        name + suffix
        for name, kind in {**CONTRACT_METRICS, **exported_families()}.items()
        for suffix in suffixes[kind]
    }


def metrics_in(expression: str) -> set[str]:
    return set(re.findall(r"\bbridge_[a-z0-9_]+", expression))


def dashboard() -> dict[str, Any]:
    return dict(json.loads((MONITORING / "dashboard.json").read_text()))


def dashboard_expressions() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel["targets"]]


def rule_groups() -> list[dict[str, Any]]:
    return list(yaml.safe_load((MONITORING / "alerts.yaml").read_text())["groups"])


def rules() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"]]


def test_health_py_is_parsed_and_agrees_with_the_contract_kinds() -> None:
    families = exported_families()
    assert {"bridge_frames_received": "counter", "bridge_commit_latency_seconds": "histogram"}.items() <= (
        families.items()
    )
    assert families["bridge_feed_connected"] == "gauge"
    for name, kind in CONTRACT_METRICS.items():
        assert families.get(name, kind) == kind, name


def test_the_dashboard_queries_only_metrics_that_exist_and_shows_every_one_asked_for() -> None:
    known = series_names()
    used = set().union(*map(metrics_in, dashboard_expressions()))
    assert used - known == set()
    assert set(DASHBOARD_MUST_SHOW) - used == set()
    assert any("histogram_quantile(0.99" in expression for expression in dashboard_expressions())


def test_the_dashboard_is_importable_grafana_json() -> None:
    board = dashboard()
    assert board["uid"] == "stream-bridge" and board["title"]
    (variable,) = board["templating"]["list"]
    assert variable == {**variable, "type": "datasource", "query": "prometheus", "name": "datasource"}
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]) and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["targets"] and all(target["refId"] for target in panel["targets"])


def test_the_alert_rules_are_the_ones_asked_for_and_use_only_metrics_that_exist() -> None:
    assert {rule["alert"] for rule in rules()} == ALERTS
    known = series_names()
    for rule in rules():
        texts = [rule["expr"], *rule["annotations"].values()]
        assert set().union(*map(metrics_in, texts)) - known - PROMQL_WORDS == set(), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
    by_name = {rule["alert"]: rule for rule in rules()}
    assert by_name["BridgeFeedBlind"]["for"] == "30s"
    assert "sum by (feed) (bridge_lease_held) == 0" in by_name["BridgeFeedWithoutHolder"]["expr"]
    assert "> 0.8" in by_name["BridgeJournalNearBudget"]["expr"]
    assert "< 86400" in by_name["BridgeRefreshTokenExpiring"]["expr"]
    assert "< 120" in by_name["BridgeAccessTokenNotRefreshed"]["expr"]


def test_the_operator_rule_carries_exactly_the_plain_rules() -> None:
    rule = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == rule_groups()


def test_the_service_monitor_scrapes_the_bridge_service() -> None:
    monitor = yaml.safe_load((MONITORING / "servicemonitor.yaml").read_text())
    services = [
        document
        for document in yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "service.yaml").read_text())
        if document and document["spec"].get("clusterIP") != "None"
    ]
    (service,) = services
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    ports = {port["name"] for port in service["spec"]["ports"]}
    assert [endpoint["port"] for endpoint in monitor["spec"]["endpoints"]] == ["metrics"]
    assert "metrics" in ports and monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    kit = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    base = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "kustomization.yaml").read_text())
    assert kit["namespace"] == base["namespace"]
    assert set(kit["resources"]) == {"servicemonitor.yaml", "prometheusrule.yaml"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if PROMTOOL is None:
        pytest.skip("promtool is not installed (Debian package 'prometheus'): alert rules not checked")
    return subprocess.run(
        [PROMTOOL, *args], cwd=MONITORING, capture_output=True, text=True, timeout=60, check=False
    )  # fmt: skip


def test_promtool_accepts_the_alert_rules() -> None:
    result = promtool("check", "rules", "alerts.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_the_alerts_fire_as_their_unit_tests_say() -> None:
    tested = set(re.findall(r"alertname: (\w+)", (MONITORING / "alerts.test.yaml").read_text()))
    assert len(tested) >= 2 and tested <= ALERTS
    result = promtool("test", "rules", "alerts.test.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
