"""The chart's alerts (a PrometheusRule) and Grafana dashboard (a ConfigMap), both off by
default: every expression is PromQL that parses (promql-parser, the Rust parser Greptime
maintains), asks only for metrics the services export, by labels those metrics have, within
one namespace; every alert says how bad it is and what to do; annotations and legends name
only labels their expression keeps."""

from __future__ import annotations

import importlib
import json
import re
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from tests.deploy.conftest import NAMESPACE
from tests.deploy.test_chart import MINIMAL, Render, find, one

promql_parser = pytest.importorskip("promql_parser", reason="pip install promql-parser")
METRIC_MODULES = (
    "service.web",
    "service.inference.metrics",
    "service.training_api.metrics",
    "service.dicom_node.metrics",
)
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
ALERTS = {"metrics": {"prometheusRule": {"enabled": True, "labels": {"release": "kps"}}}}


def exported() -> dict[str, set[str]]:
    """Every series name the services export, with the label names it has."""
    names: dict[str, set[str]] = {}
    for module in METRIC_MODULES:
        for value in vars(importlib.import_module(module)).values():
            if isinstance(value, MetricWrapperBase):
                for suffix in SUFFIXES[value._type]:
                    names[value._name + suffix] = {*value._labelnames, "le"} - (
                        set() if value._type == "histogram" else {"le"}
                    )
    return names


def selectors(node: Any) -> list[Any]:
    """The vector selectors of a parsed expression, wherever they sit."""
    if isinstance(node, promql_parser.VectorSelector):
        return [node]
    if isinstance(node, promql_parser.MatrixSelector):
        return [node.vector_selector]
    children: list[Any] = []
    for attr in ("lhs", "rhs", "expr", "param", "args"):
        child = getattr(node, attr, None)
        children.extend(child if isinstance(child, list) else [child] if child is not None else [])
    return [found for child in children for found in selectors(child)]


def rules(manifests: list[Any]) -> list[dict[str, Any]]:
    rule = one(manifests, "PrometheusRule")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def test_no_alerts_unless_asked(render: Render) -> None:
    assert find(render(MINIMAL), "PrometheusRule") == []


def test_every_alert_asks_for_exported_metrics_by_their_labels(render: Render) -> None:
    manifests = render({**MINIMAL, **ALERTS})
    rule = one(manifests, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kps"  # the operator's ruleSelector
    metrics = exported()
    alerts = rules(manifests)
    assert len({a["alert"] for a in alerts}) == len(alerts) >= 7
    for alert in alerts:
        expr = promql_parser.parse(alert["expr"])  # raises on a syntax error
        found = selectors(expr)
        assert found, alert["alert"]
        for selector in found:
            where = f"{alert['alert']}: {selector.name}"
            assert selector.name in metrics, f"{where} is not a metric the services export"
            matchers = {m.name: m.value for m in selector.matchers.matchers}
            assert matchers.pop("namespace") == NAMESPACE, where  # this release's only
            assert set(matchers) <= metrics[selector.name], f"{where}: no label {set(matchers)}"
        assert alert["labels"]["severity"] in ("critical", "warning")
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
        for label in re.findall(r"\$labels\.(\w+)", str(alert["annotations"])):
            assert re.search(rf"by \([\w, ]*\b{label}\b", alert["expr"]), (alert["alert"], label)


def test_thresholds_come_from_the_values(render: Render, helm: Any) -> None:
    limits = {"oldestPendingMinutes": 15, "errorRatio": 0.05, "inferenceP95Seconds": 0.5,
              "apiKeyExpiryDays": 30}  # fmt: skip
    values = {**MINIMAL, "metrics": {"prometheusRule": {"enabled": True, **limits}}}
    by_name = {a["alert"]: a for a in rules(render(values))}
    assert by_name["ScantuneDicomBacklog"]["expr"].endswith("> 900")
    assert by_name["ScantuneHttpErrors"]["expr"].rstrip().endswith("> 0.05")
    assert "More than 5% of" in by_name["ScantuneHttpErrors"]["annotations"]["summary"]
    assert by_name["ScantuneInferenceSlow"]["expr"].rstrip().endswith("> 0.5")
    assert "< 2592000 > 0" in by_name["ScantuneApiKeyExpiringSoon"]["expr"]
    assert "within 30 days" in by_name["ScantuneApiKeyExpiringSoon"]["annotations"]["summary"]
    assert by_name["ScantuneDicomResultsExpired"]["labels"]["severity"] == "critical"
    wrong = {**MINIMAL, "metrics": {"prometheusRule": {"enabled": True, "errorRatio": 2}}}
    with pytest.raises(helm.HelmValuesError, match="errorRatio"):
        render(wrong)


def dashboards(manifests: list[Any]) -> list[Any]:
    return [m for m in find(manifests, "ConfigMap") if m["metadata"]["name"].endswith("-dashboard")]


def test_the_grafana_dashboard_charts_exported_metrics(render: Render) -> None:
    assert not [
        m for m in find(render(MINIMAL), "ConfigMap") if "dashboard" in m["metadata"]["name"]
    ]
    values = {**MINIMAL, "metrics": {"grafanaDashboard": {"enabled": True}}}
    (board,) = [
        m for m in find(render(values), "ConfigMap") if "dashboard" in m["metadata"]["name"]
    ]
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"  # what the sidecar finds
    dashboard = json.loads(board["data"]["scantune.json"])
    metrics = exported()
    panels = [p for p in dashboard["panels"] if p["type"] == "timeseries"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    charted = set()
    for panel in panels:
        assert panel["targets"] and panel["description"], panel["title"]
        for target in panel["targets"]:
            for selector in selectors(promql_parser.parse(target["expr"])):
                where = f"{panel['title']}: {selector.name}"
                assert selector.name in metrics, f"{where} is not a metric the services export"
                matchers = {m.name: m.value for m in selector.matchers.matchers}
                assert matchers.pop("namespace") == "$namespace", where
                assert set(matchers) <= metrics[selector.name], where
                charted.add(selector.name)
            for label in re.findall(r"{{(\w+)}}", target["legendFormat"]):
                assert re.search(rf"by \([\w, ]*\b{label}\b", target["expr"]), (where, label)
    names = {n.rsplit("_bucket", 1)[0] for n in charted}
    charts = {"scantune_dicom_series_expired_total", "scantune_http_request_seconds",
              "scantune_api_key_expiry_timestamp_seconds"}  # fmt: skip
    assert charts <= names
