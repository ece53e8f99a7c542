"""The chart's alerts evaluated by Prometheus's own rule engine (`promtool test rules`, from
Debian's prometheus package): over series shaped like the services' metrics, each alert fires
when it should, with the labels and text it should, and stays quiet when it should not;
another namespace's series never fire this release's alerts."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import NAMESPACE
from tests.deploy.test_chart import MINIMAL, Render, one

pytestmark = pytest.mark.skipif(
    not shutil.which("promtool"), reason="promtool (Debian's prometheus) is installed by .ci/run"
)
ALERTS = {"metrics": {"prometheusRule": {"enabled": True}}}


def series(name: str, values: str, **labels: str) -> dict[str, str]:
    """An input series of this release's namespace (or `namespace=` another)."""
    labels = {"namespace": NAMESPACE, **labels}
    matchers = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return {"series": f"{name}{{{matchers}}}", "values": values}


def firing(rule: dict[str, Any], **labels: str) -> dict[str, Any]:
    """What promtool should see `rule` fire with for `labels`: its own labels, and its
    annotations with each `$labels.x` filled in (Prometheus's template expansion)."""

    def expand(text: str) -> str:
        return re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", lambda m: labels[m.group(1)], text)

    return {
        "exp_labels": {**rule["labels"], **labels},
        "exp_annotations": {k: expand(v) for k, v in rule["annotations"].items()},
    }


def run_promtool(tmp_path: Path, groups: list[Any], tests: list[dict[str, Any]]) -> str:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    checked = subprocess.run(
        ["promtool", "check", "rules", str(tmp_path / "rules.yaml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    (tmp_path / "tests.yaml").write_text(
        yaml.safe_dump({"rule_files": ["rules.yaml"], "tests": tests}, sort_keys=False)
    )
    tested = subprocess.run(
        ["promtool", "test", "rules", "tests.yaml"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    return f"{tested.returncode}\n{tested.stdout}{tested.stderr}"


@pytest.fixture
def rules(render: Render) -> tuple[list[Any], dict[str, dict[str, Any]]]:
    """The rendered PrometheusRule's groups, and its alerts by name."""
    groups = one(render({**MINIMAL, **ALERTS}), "PrometheusRule")["spec"]["groups"]
    return groups, {r["alert"]: r for g in groups for r in g["rules"]}


def test_the_alerts_fire_in_prometheus_as_they_say(
    rules: tuple[list[Any], dict[str, dict[str, Any]]], tmp_path: Path
) -> None:
    groups, alert = rules
    shifted, below = alert["ScantunePredictionMixShifted"], alert["ScantuneModelBelowValidation"]
    failing, errors = alert["ScantuneDicomDeliveriesFailing"], alert["ScantuneHttpErrors"]
    lately = alert["ScantuneModelBelowValidationLately"]
    unmatched = alert["ScantuneDicomReportsUnmatched"]
    refused = alert["ScantuneDicomWithdrawalRejected"]
    withdrawals = "scantune_dicom_withdrawals_total"
    stuck = alert["ScantuneDicomWithdrawalsFailing"]
    at_client = alert["ScantuneModelBelowValidationAtClient"]
    predicted, expected = "scantune_inference_predicted_total", "scantune_model_expected_share"
    requests = "scantune_http_requests_total"
    tests = [
        {  # a day of answers: v3 answers pneumonia 75% of the time where validation said 30%;
            # v4 as validation said; v5 shifted too, but on fewer scans than the alert needs.
            "interval": "2m",  # a gauge is seen for 5 minutes after each sample
            "input_series": [
                series(predicted, "0+3x800", model="chest", version="3", label="pneumonia"),
                series(predicted, "0+1x800", model="chest", version="3", label="normal"),
                series(predicted, "0+3x800", model="chest", version="4", label="pneumonia"),
                series(predicted, "0+7x800", model="chest", version="4", label="normal"),
                series(predicted, "0+0.03x800", model="chest", version="5", label="pneumonia"),
                series(predicted, "0+0.01x800", model="chest", version="5", label="normal"),
                *(
                    series(expected, f"{share}x800", model="chest", version=v, label=label)
                    for v in ("3", "4", "5")
                    for label, share in (("pneumonia", 0.3), ("normal", 0.7))
                ),
            ],
            "alert_rule_test": [
                {
                    "eval_time": "26h",
                    "alertname": "ScantunePredictionMixShifted",
                    "exp_alerts": [
                        firing(shifted, model="chest", version="3", label=label)
                        for label in ("normal", "pneumonia")
                    ],
                },
                {"eval_time": "30m", "alertname": "ScantunePredictionMixShifted", "exp_alerts": []},
            ],
        },
        {  # stow deliveries all fail; dimse ones fail too, but others get through
            "interval": "1m",
            "input_series": [
                series("scantune_dicom_delivery_failures_total", "0+1x40", kind="stow"),
                series("scantune_dicom_results_delivered_total", "0x40", kind="stow"),
                series("scantune_dicom_delivery_failures_total", "0+1x40", kind="dimse"),
                series("scantune_dicom_results_delivered_total", "0+1x40", kind="dimse"),
            ],
            "alert_rule_test": [
                {
                    "eval_time": "35m",
                    "alertname": "ScantuneDicomDeliveriesFailing",
                    "exp_alerts": [firing(failing, kind="stow")],
                },
                # failing, but not yet for 15 minutes
                {
                    "eval_time": "10m",
                    "alertname": "ScantuneDicomDeliveriesFailing",
                    "exp_alerts": [],
                },
            ],
        },
        {  # 3% of inference's requests fail (the limit is 2%), 1% of the API's
            "interval": "1m",
            "input_series": [
                series(requests, f"0+{n}x40", service=service, status=status)
                for service, status, n in (
                    ("inference", "200", 97),
                    ("inference", "503", 3),
                    ("training", "200", 99),
                    ("training", "500", 1),
                )
            ],
            "alert_rule_test": [
                {
                    "eval_time": "30m",
                    "alertname": "ScantuneHttpErrors",
                    "exp_alerts": [firing(errors, service="inference")],
                }
            ],
        },
        {  # a version falls below its card; another release's model does too
            "interval": "1m",
            "input_series": [
                series("scantune_model_below_validation", "0 0 1 1", model="chest", version="3"),
                series(  # another release's model
                    "scantune_model_below_validation",
                    "1 1 1 1",
                    model="knee",
                    namespace="another-release",
                ),
            ],
            "alert_rule_test": [
                {"eval_time": "1m", "alertname": "ScantuneModelBelowValidation", "exp_alerts": []},
                {
                    "eval_time": "3m",
                    "alertname": "ScantuneModelBelowValidation",
                    "exp_alerts": [firing(below, model="chest")],
                },
            ],
        },
        {  # most settled reports find no scan (fires after an hour); then the modality is fixed
            "interval": "1m",  # a scrape's: a gauge's sample lasts 5 minutes
            "input_series": [
                series("scantune_dicom_exam_reports", "15x240", state="held"),
                series("scantune_dicom_exam_reports", "5x100 40x140", state="matched"),
            ],
            "alert_rule_test": [
                {
                    "eval_time": "30m",
                    "alertname": "ScantuneDicomReportsUnmatched",
                    "exp_alerts": [],
                },
                {
                    "eval_time": "70m",
                    "alertname": "ScantuneDicomReportsUnmatched",
                    "exp_alerts": [firing(unmatched)],
                },
                {
                    "eval_time": "200m",
                    "alertname": "ScantuneDicomReportsUnmatched",
                    "exp_alerts": [],
                },
            ],
        },
        {  # the RIS refuses a withdrawal at 5m; the PACS's tries only fail (retried)
            "interval": "1m",
            "input_series": [
                series(withdrawals, "0x4 1x120", kind="hl7", outcome="rejected"),
                series(withdrawals, "0+1x120", kind="dimse", outcome="failed"),
            ],
            "alert_rule_test": [
                {"eval_time": "3m", "alertname": refused["alert"], "exp_alerts": []},
                {
                    "eval_time": "10m",
                    "alertname": refused["alert"],
                    "exp_alerts": [firing(refused, kind="hl7")],
                },
                {"eval_time": "90m", "alertname": refused["alert"], "exp_alerts": []},
            ],
        },
        {  # the PACS stays away: every withdrawal try fails; the RIS's fail now and then
            "interval": "1m",
            "input_series": [
                series(withdrawals, "0+1x180", kind="dimse", outcome="failed"),
                series(withdrawals, "0+1x180", kind="hl7", outcome="failed"),
                series(withdrawals, "0+0.1x180", kind="hl7", outcome="done"),
            ],
            "alert_rule_test": [
                {"eval_time": "30m", "alertname": stuck["alert"], "exp_alerts": []},
                {
                    "eval_time": "90m",
                    "alertname": stuck["alert"],
                    "exp_alerts": [firing(stuck, kind="dimse")],
                },
            ],
        },
        {  # too few reports to say: 10 held of 12 stays quiet
            "interval": "1m",
            "input_series": [
                series("scantune_dicom_exam_reports", "10x120", state="held"),
                series("scantune_dicom_exam_reports", "2x120", state="matched"),
            ],
            "alert_rule_test": [
                {
                    "eval_time": "100m",
                    "alertname": "ScantuneDicomReportsUnmatched",
                    "exp_alerts": [],
                }
            ],
        },
        {  # one site's reports fall below the card; the other site's do not
            "interval": "1m",
            "input_series": [
                series(
                    "scantune_model_client_below_validation",
                    "0 0 1 1",
                    model="chest",
                    version="3",
                    client="north",
                ),
                series(
                    "scantune_model_client_below_validation",
                    "0 0 0 0",
                    model="chest",
                    version="3",
                    client="south",
                ),
            ],
            "alert_rule_test": [
                {
                    "eval_time": "3m",
                    "alertname": "ScantuneModelBelowValidationAtClient",
                    "exp_alerts": [firing(at_client, model="chest", version="3", client="north")],
                }
            ],
        },
        {  # one client reports v7, and does badly: the 28-day alert's, not a site's apart
            "interval": "1m",
            "input_series": [
                series(
                    "scantune_model_client_below_validation",
                    "0 0 1 1",
                    model="chest",
                    version="7",
                    client="north",
                ),
            ],
            "alert_rule_test": [
                {"eval_time": "3m", "alertname": at_client["alert"], "exp_alerts": []},
            ],
        },
        {  # the other client's reports aged out (NaN under gunicorn): one client, no site apart
            "interval": "1m",
            "input_series": [
                series(
                    "scantune_model_client_below_validation",
                    "0 0 1 1",
                    model="chest",
                    version="8",
                    client="north",
                ),
                series(
                    "scantune_model_client_below_validation",
                    "0 0 NaN NaN",
                    model="chest",
                    version="8",
                    client="south",
                ),
            ],
            "alert_rule_test": [
                {"eval_time": "3m", "alertname": at_client["alert"], "exp_alerts": []},
            ],
        },
        {  # v3's last four weeks fall below its card, though its figures since it began do not
            "interval": "1m",
            "input_series": [
                series("scantune_model_below_validation", "0 0 0 0", model="chest", version="3"),
                series(
                    "scantune_model_recent_below_validation", "0 0 2 2", model="chest", version="3"
                ),
                series(
                    "scantune_model_recent_below_validation", "0 0 0 0", model="chest", version="2"
                ),
            ],
            "alert_rule_test": [
                {"eval_time": "3m", "alertname": "ScantuneModelBelowValidation", "exp_alerts": []},
                {
                    "eval_time": "3m",
                    "alertname": "ScantuneModelBelowValidationLately",
                    "exp_alerts": [firing(lately, model="chest", version="3")],
                },
            ],
        },
    ]
    result = run_promtool(tmp_path, groups, tests)
    assert result.startswith("0\n"), result


def test_key_expiry_alerts_fire_in_prometheus_as_they_say(
    rules: tuple[list[Any], dict[str, dict[str, Any]]], tmp_path: Path
) -> None:
    """ci-nightly expires 14 days and 2 hours in, as both services it is configured on say;
    legacy 3 hours in; pacs never; another release's key a day in."""
    groups, alert = rules
    soon, expired = alert["ScantuneApiKeyExpiringSoon"], alert["ScantuneApiKeyExpired"]
    gauge, hour = "scantune_api_key_expiry_timestamp_seconds", 3600

    def at(when: str, rule: dict[str, Any], *keys: str) -> dict[str, Any]:
        fired = [firing(rule, key=k) for k in keys]
        return {"eval_time": when, "alertname": rule["alert"], "exp_alerts": fired}

    test = {
        "interval": "1m",
        "input_series": [
            series(gauge, f"{(14 * 24 + 2) * hour}x300", key="ci-nightly", job="training"),
            series(gauge, f"{(14 * 24 + 2) * hour}x300", key="ci-nightly", job="inference"),
            series(gauge, f"{3 * hour}x300", key="legacy", job="training"),
            series(gauge, "Inf+0x300", key="pacs", job="inference"),  # never
            series(gauge, f"{24 * hour}x300", key="old", namespace="another-release"),
        ],
        "alert_rule_test": [
            at("1h", soon, "legacy"),  # ci-nightly: 14 days and an hour left
            at("1h", expired),
            at("2h", soon, "legacy"),  # ci-nightly: 14 days left, not fewer
            at("2h1m", soon, "ci-nightly", "legacy"),  # each once, whoever says it
            at("2h59m", expired),
            at("3h", soon, "ci-nightly"),  # legacy has expired: the other alert's
            at("3h", expired, "legacy"),
            at("4h", expired, "legacy"),  # while it is still configured
        ],
    }
    result = run_promtool(tmp_path, groups, [test])
    assert result.startswith("0\n"), result


def test_the_atypical_inputs_alert_fires_in_prometheus_as_it_says(
    rules: tuple[list[Any], dict[str, dict[str, Any]]], tmp_path: Path
) -> None:
    """Over a day: chest v3 is sent 10% atypical scans (the alert's 5% default), v4 0.5% as
    its training scans would give, v5 half, on fewer scans than the alert needs, and another
    release's v3 all."""
    groups, alert = rules
    atypical, images = "scantune_inference_atypical_inputs_total", "scantune_inference_images_total"
    test = {
        "interval": "2m",
        "input_series": [
            series(images, "0+10x800", model="chest", version="3"),
            series(atypical, "0+1x800", model="chest", version="3"),
            series(images, "0+10x800", model="chest", version="4"),
            series(atypical, "0+0.05x800", model="chest", version="4"),
            series(images, "0+0.1x800", model="chest", version="5"),
            series(atypical, "0+0.05x800", model="chest", version="5"),
            series(images, "0+10x800", model="chest", version="3", namespace="another-release"),
            series(atypical, "0+10x800", model="chest", version="3", namespace="another-release"),
        ],
        "alert_rule_test": [
            {"eval_time": "30m", "alertname": "ScantuneAtypicalInputs", "exp_alerts": []},
            {
                "eval_time": "26h",
                "alertname": "ScantuneAtypicalInputs",
                "exp_alerts": [firing(alert["ScantuneAtypicalInputs"], model="chest", version="3")],
            },
        ],
    }
    result = run_promtool(tmp_path, groups, [test])
    assert result.startswith("0\n"), result


def test_the_blocked_study_alert_fires_only_while_one_keeps_coming(
    rules: tuple[list[Any], dict[str, dict[str, Any]]], tmp_path: Path
) -> None:
    """A PACS routes a purged study back every minute for three hours over C-STORE; STOW-RS
    drops a few instances once, as a purge lands, then none."""
    groups, alert = rules
    received = "scantune_dicom_instances_received_total"
    test = {
        "interval": "1m",
        "input_series": [
            series(received, "0+2x180", via="dimse", outcome="purged"),
            series(received, "0 5 5 5 5x176", via="stow", outcome="purged"),
            series(received, "0+50x180", via="stow", outcome="stored"),
        ],
        "alert_rule_test": [
            {"eval_time": "50m", "alertname": "ScantuneDicomBlockedStudyResent", "exp_alerts": []},
            {
                "eval_time": "2h30m",
                "alertname": "ScantuneDicomBlockedStudyResent",
                "exp_alerts": [firing(alert["ScantuneDicomBlockedStudyResent"], via="dimse")],
            },
        ],
    }
    result = run_promtool(tmp_path, groups, [test])
    assert result.startswith("0\n"), result


def test_a_wrong_expectation_fails_in_promtool(
    rules: tuple[list[Any], dict[str, dict[str, Any]]], tmp_path: Path
) -> None:
    """The harness can fail: an alert expected where the series give no cause."""
    groups, alert = rules
    quiet = {
        "interval": "1m",
        "input_series": [series("scantune_model_below_validation", "0 0 0 0", model="chest")],
        "alert_rule_test": [
            {
                "eval_time": "3m",
                "alertname": "ScantuneModelBelowValidation",
                "exp_alerts": [firing(alert["ScantuneModelBelowValidation"], model="chest")],
            }
        ],
    }
    result = run_promtool(tmp_path, groups, [quiet])
    assert not result.startswith("0\n") and "ScantuneModelBelowValidation" in result, result
