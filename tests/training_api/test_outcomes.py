"""Outcomes reported for scans a version classified: the figures (against a pairwise AUC and
a textbook interval), the API that takes them (checked field by field, a corrected report
replacing the first, the reference never kept), and who sees whose reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from models.card import DecisionThreshold, Estimate, ModelAccess
from tests.dicom_node.parts import wait_until
from tests.training_api.conftest import publish_version
from tests.training_api.test_model_access import RADIOLOGY_ONLY
from tests.training_api.test_security import as_, audit, make_app

__all__ = ["make_app"]
CLAIMED = {
    name: Estimate(value=v, low=lo, high=hi, images=800, source="out_of_fold")
    for name, (v, lo, hi) in {
        "auc": (0.97, 0.95, 0.98),
        "sensitivity": (0.93, 0.90, 0.95),
        "specificity": (0.90, 0.86, 0.93),
    }.items()
}
CUT = DecisionThreshold(positive_class="pneumonia", value=0.4)


def said(p_pneumonia: float) -> dict[str, float]:
    return {"normal": 1 - p_pneumonia, "pneumonia": p_pneumonia}


def card(**fields: Any) -> Any:
    from models.card import Calibration, DatasetInfo, InputSpec, ModelCard, Parity, TrainingInfo

    return ModelCard(
        name="m", classes=fields.pop("classes", ("normal", "pneumonia")),
        input=InputSpec(size=32, channels=1, mean=(0.5,), std=(0.25,)),
        base_model="efficientnet_lite0",
        dataset=fields.pop("dataset", DatasetInfo(uri="/d.npz", format="npz", sha256="0" * 64)),
        calibration=Calibration(temperature=1.0, applied_in_graph=True),
        parity=Parity(max_abs_diff=0.0, images=1, tolerance=1e-4),
        training=TrainingInfo(seconds=1, device="cpu", hardware="t", epochs_run=1, best_epoch=1,
                              seed=0),
        onnx_sha256="0" * 64, **fields,
    )  # fmt: skip


def pairwise_auc(positive: list[float], negative: list[float]) -> float:
    """AUC by its definition: the share of (positive, negative) pairs ranked right, ties half."""
    pairs = [(p > n) + 0.5 * (p == n) for p in positive for n in negative]
    return sum(pairs) / len(pairs)


def test_binary_figures_at_the_cards_threshold() -> None:
    from models.outcomes import reported_figures

    truth = ["pneumonia"] * 6 + ["normal"] * 4
    scores = [0.9, 0.8, 0.45, 0.39, 0.7, 0.35, 0.1, 0.42, 0.2, 0.05]
    figures = reported_figures(card(threshold=CUT, estimates=CLAIMED), truth, map(said, scores))
    # at 0.4: pneumonia right 4 of 6 (0.39 and 0.35 missed), normal right 3 of 4 (0.42 not)
    assert figures["confusion_matrix"] == [[3, 1], [2, 4]]
    assert (figures["decision"], figures["threshold"], figures["reports"]) == ("threshold", 0.4, 10)
    assert figures["by_label"] == {"normal": 4, "pneumonia": 6}
    assert figures["sensitivity"]["value"] == pytest.approx(4 / 6)
    assert figures["specificity"]["value"] == pytest.approx(3 / 4)
    expected = pairwise_auc(scores[:6], scores[6:])
    assert figures["auc"]["value"] == pytest.approx(expected)
    assert figures["auc"]["low"] <= expected <= figures["auc"]["high"]
    assert figures["auc"]["source"] == "reported" and figures["auc"]["images"] == 10
    # 7 of 10 right: Wilson's 95% interval, as tabulated (Newcombe 1998): 0.3968 to 0.8922
    accuracy = figures["accuracy"]
    assert accuracy["value"] == pytest.approx(0.7)
    assert (accuracy["low"], accuracy["high"]) == (pytest.approx(0.3968, abs=1e-4),
                                                   pytest.approx(0.8922, abs=1e-4))  # fmt: skip
    assert figures["validation"]["auc"]["low"] == 0.95
    # sensitivity's interval at 10 scans reaches above 0.90: not below; AUC's may not
    assert "sensitivity" not in figures["below_validation"]
    assert ("auc" in figures["below_validation"]) == (figures["auc"]["high"] < 0.95)


def test_figures_before_any_report_and_of_one_class_only_and_for_three_classes() -> None:
    from models.outcomes import reported_figures

    empty = reported_figures(card(threshold=CUT), [], [])
    assert empty["reports"] == 0 and empty["accuracy"] is None and empty["auc"] is None
    assert empty["confusion_matrix"] == [[0, 0], [0, 0]]
    one_class = reported_figures(card(threshold=CUT), ["pneumonia"] * 3, map(said, [0.9, 0.8, 0.1]))
    assert one_class["auc"] is None and one_class["accuracy"]["value"] == pytest.approx(2 / 3)
    assert one_class["sensitivity"]["value"] == pytest.approx(2 / 3)  # a share of the findings
    assert one_class["specificity"] is None  # no normal reported yet
    # two findings, both missed: Wilson's 0 to 0.658, where a bootstrap of two says 0 to 0
    missed = reported_figures(card(threshold=CUT), ["pneumonia"] * 2, map(said, [0.1, 0.2]))
    sensitivity = missed["sensitivity"]
    assert (sensitivity["low"], sensitivity["high"]) == (0.0, pytest.approx(0.6576, abs=1e-4))
    three = card(classes=("a", "b", "c"))
    probabilities = [{"a": 0.5, "b": 0.3, "c": 0.2}, {"a": 0.1, "b": 0.2, "c": 0.7}]
    figures = reported_figures(three, ["a", "b"], probabilities)
    assert figures["decision"] == "argmax" and figures["auc"] is None
    assert figures["confusion_matrix"] == [[1, 0, 0], [0, 0, 1], [0, 0, 0]]


def url(name: str = "chest-xray", version: int = 1) -> str:
    return f"/v1/models/{name}/versions/{version}/outcomes"


def outcome(reference: str, label: str, p: float) -> dict[str, Any]:
    return {"reference": reference, "label": label, "probabilities": said(p)}


def test_reported_outcomes_are_kept_replaced_when_corrected_and_shown_to_whom_they_belong(
    make_app: Callable[..., Flask], training_env: Path
) -> None:
    artifacts = training_env / "artifacts"
    publish_version(artifacts, "chest-xray", 1, access=ModelAccess(owner="ci"),
                    threshold=CUT, estimates=CLAIMED)  # fmt: skip
    app = make_app()
    pacs, gateway = as_(app, "radiology-pacs"), as_(app, "gateway")
    sent = [outcome("ACC-1/1", "pneumonia", 0.9), outcome("ACC-2/1", "normal", 0.2),
            outcome("ACC-3/1", "normal", 0.6)]  # fmt: skip
    taken = pacs.post(url(), json={"outcomes": sent})
    assert taken.status_code == 200, taken.get_json()
    assert taken.get_json() == {
        "name": "chest-xray",
        "version": 1,
        "accepted": 3,
        "replaced": 0,
        "signed": 0,
    }
    # a read of ACC-3 corrected: the scan showed pneumonia after all; counted once
    corrected = pacs.post(url(), json={"outcomes": [outcome("ACC-3/1", "pneumonia", 0.6)]})
    assert corrected.get_json()["replaced"] == 1
    theirs = gateway.post(url(), json={"outcomes": [outcome("ACC-1/1", "normal", 0.7)]})
    assert theirs.status_code == 200

    own = pacs.get(url()).get_json()
    assert (own["reported_by"], own["clients"], own["reports"]) == ("radiology", 1, 3)
    assert own["confusion_matrix"] == [[1, 0], [0, 2]] and own["accuracy"]["value"] == 1.0
    assert own["first_reported_at"] <= own["last_reported_at"]
    for owner_or_admin in ("ci-reader", "ops"):  # the version is ci's
        every = as_(app, owner_or_admin).get(url()).get_json()
        assert (every["reported_by"], every["clients"], every["reports"]) == ("every client", 2, 4)
        assert every["by_label"] == {"normal": 2, "pneumonia": 2}
    nobody = as_(app, "radiology-lead").get(url()).get_json()  # radiology's other key: the same
    assert nobody["reports"] == 3

    [record] = [r for r in audit(app, action="outcomes_reported") if r["client"] == "gateway"]
    assert record["target"] == "model/chest-xray/versions/1"
    assert (record["detail"]["reports"], record["detail"]["replaced"]) == (1, 0)
    from sqlalchemy import select

    from service.jobs.tables import OutcomeRow
    from service.training_api import services

    with app.app_context(), services().jobs.store.engine.connect() as conn:
        kept = conn.execute(select(OutcomeRow.reference)).scalars().all()
    assert len(kept) == 4 and not any(r.startswith("ACC") for r in kept)  # hashes only
    for row in audit(app):
        assert "ACC-" not in str(row)


def test_bad_outcomes_are_refused_field_by_field_and_nothing_is_kept(
    make_app: Callable[..., Flask], training_env: Path
) -> None:
    artifacts = training_env / "artifacts"
    publish_version(artifacts, "chest-xray", 1, access=ModelAccess(owner="ci"), threshold=CUT)
    publish_version(artifacts, "brain-ct", 1, access=RADIOLOGY_ONLY)
    app = make_app()
    gateway = as_(app, "gateway")
    good = outcome("A", "normal", 0.1)
    for bad, loc in [
        ({"outcomes": []}, "body/outcomes"),
        ({"outcomes": [good, {**good, "reference": "B", "label": "effusion"}]},
         "body/outcomes/1/label"),
        ({"outcomes": [{**good, "probabilities": {"normal": 1.0}}]},
         "body/outcomes/0/probabilities"),
        ({"outcomes": [{**good, "probabilities": {"normal": 0.7, "pneumonia": 0.7}}]},
         "body/outcomes/0/probabilities"),
        ({"outcomes": [{**good, "probabilities": {"normal": 1.5, "pneumonia": -0.5}}]},
         "body/outcomes/0/probabilities"),
        ({"outcomes": [good, good]}, "body/outcomes/1/reference"),
        ({"outcomes": [{**good, "patient": "P-1"}]}, "body/outcomes/0/patient"),
    ]:  # fmt: skip
        refused = gateway.post(url(), json=bad)
        assert refused.status_code == 422, (loc, refused.get_json())
        assert loc in [e["loc"] for e in refused.get_json()["errors"]], refused.get_json()
    assert gateway.get(url()).get_json()["reports"] == 0  # a refused request keeps nothing
    assert gateway.post(url("brain-ct"), json={"outcomes": [good]}).status_code == 404
    assert gateway.post(url(version=9), json={"outcomes": [good]}).status_code == 404
    assert gateway.get(url("brain-ct")).status_code == 404  # private to radiology
    no_predict = as_(app, "ci-reader").post(url(), json={"outcomes": [good]})
    assert no_predict.status_code == 403 and "predict" in no_predict.get_json()["detail"]
    assert gateway.post(url(), data="{", content_type="application/json").status_code == 400


def test_a_withdrawn_read_is_retracted_by_its_client_alone_and_the_gauges_follow(
    make_app: Callable[..., Flask], training_env: Path
) -> None:
    publish_version(training_env / "artifacts", "chest-xray", 1, access=ModelAccess(owner="ci"),
                    threshold=CUT, estimates=CLAIMED)  # fmt: skip
    publish_version(training_env / "artifacts", "brain-ct", 1, access=RADIOLOGY_ONLY)
    app = make_app()
    pacs, gateway = as_(app, "radiology-pacs"), as_(app, "gateway")
    reads = [outcome(f"ACC-{i}/1", "pneumonia", 0.9) for i in range(3)]
    assert pacs.post(url(), json={"outcomes": reads}).status_code == 200
    assert gateway.post(url(), json={"outcomes": reads[:1]}).status_code == 200
    wait_until(lambda: _reported("chest-xray", "1") == 4, 30, "the gauges count four")

    retract = f"{url()}/retract"
    answer = pacs.post(retract, json={"references": ["ACC-0/1", "ACC-1/1", "ACC-9/1"]})
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json() == {"name": "chest-xray", "version": 1, "retracted": 2, "unknown": 1}
    again = pacs.post(retract, json={"references": ["ACC-0/1"]}).get_json()  # a retry: no error
    assert (again["retracted"], again["unknown"]) == (0, 1)
    own = pacs.get(url()).get_json()
    assert own["reports"] == 1 and own["by_label"] == {"normal": 0, "pneumonia": 1}
    every = as_(app, "ops").get(url()).get_json()
    assert every["reports"] == 2 and every["clients"] == 2  # the gateway's ACC-0 report stays
    wait_until(lambda: _reported("chest-xray", "1") == 2, 30, "the gauges follow the retraction")
    records = audit(app, action="outcomes_retracted")
    assert {(r["client"], r["target"]) for r in records} == {
        ("radiology", "model/chest-xray/versions/1")
    }
    assert sorted((r["detail"]["asked"], r["detail"]["retracted"]) for r in records) == [
        (1, 0), (3, 2)
    ]  # fmt: skip
    assert "ACC-" not in str(audit(app))

    for bad, loc in [({"references": []}, "body/references"),
                     ({"references": [""]}, "body/references/0"),
                     ({"references": ["A"] * 1001}, "body/references"),
                     ({"outcomes": []}, "body/outcomes")]:  # fmt: skip
        refused = pacs.post(retract, json=bad)
        assert refused.status_code == 422, (loc, refused.get_json())
        assert loc in [e["loc"] for e in refused.get_json()["errors"]], refused.get_json()
    assert gateway.post(url("brain-ct") + "/retract", json={"references": ["A"]}).status_code == 404
    no_predict = as_(app, "ci-reader").post(retract, json={"references": ["ACC-2/1"]})
    assert no_predict.status_code == 403
    assert pacs.get(url()).get_json()["reports"] == 1  # nothing refused took anything away


def _reported(model: str, version: str) -> float:
    from service.training_api import metrics

    return float(metrics.OUTCOMES_REPORTED.labels(model, version)._value.get())


def test_reports_of_outcomes_are_rate_limited_per_client(
    make_app: Callable[..., Flask], training_env: Path
) -> None:
    publish_version(training_env / "artifacts", "chest-xray", 1, access=ModelAccess(owner="ci"))
    app = make_app(rate_limits={"outcomes": "2/hour"})
    pacs, gateway = as_(app, "radiology-pacs"), as_(app, "gateway")
    for n in range(2):
        assert (
            pacs.post(url(), json={"outcomes": [outcome(f"R{n}", "normal", 0.1)]}).status_code
            == 200
        )
    refused = pacs.post(url(), json={"outcomes": [outcome("R3", "normal", 0.1)]})
    assert refused.status_code == 429 and refused.headers["Retry-After"]
    assert gateway.post(url(), json={"outcomes": [outcome("G", "normal", 0.1)]}).status_code == 200
    assert pacs.get(url()).status_code == 200  # reading them is not limited


def test_each_report_updates_the_versions_gauges_which_the_alert_watches(
    make_app: Callable[..., Flask], training_env: Path
) -> None:
    from service.training_api import metrics

    publish_version(training_env / "artifacts", "lung-ct", 3, access=ModelAccess(owner="ci"),
                    threshold=CUT, estimates=CLAIMED)  # fmt: skip
    app = make_app()
    # in service it calls most scans wrong: every figure's interval falls under the card's
    wrong = [outcome(f"W{i}", "pneumonia" if i % 2 else "normal", 0.2 if i % 2 else 0.8)
             for i in range(40)]  # fmt: skip
    assert as_(app, "gateway").post(url("lung-ct", 3), json={"outcomes": wrong}).status_code == 200

    def gauge(metric: Any, *labels: str) -> float:
        return float(metric.labels("lung-ct", "3", *labels)._value.get())

    wait_until(lambda: gauge(metrics.OUTCOMES_REPORTED) == 40, 30, "the gauges are set")
    assert gauge(metrics.REPORTED_FIGURE, "accuracy") == 0.0
    assert gauge(metrics.BELOW_VALIDATION) == 3  # auc, sensitivity, specificity
    assert gauge(metrics.RECENT_BELOW_VALIDATION) == 3  # all reported in the last 28 days
    assert gauge(metrics.CLIENT_BELOW_VALIDATION, "gateway") == 2  # Wilson shares: no AUC
    text = as_(app, "ci-reader").get("/metrics").get_data(as_text=True)
    assert 'scantune_model_below_validation{model="lung-ct",version="3"} 3.0' in text
    assert 'client_below_validation{client="gateway",model="lung-ct",version="3"} 2.0' in text

    # a restarted process has no gauges: they are worked out as it starts, before any report
    from service.training_api.context import services
    from service.training_api.outcomes import observe_reported

    every = (metrics.OUTCOMES_REPORTED, metrics.REPORTED_FIGURE, metrics.BELOW_VALIDATION,
             metrics.RECENT_BELOW_VALIDATION, metrics.CLIENT_BELOW_VALIDATION)  # fmt: skip
    for metric in every:
        metric.clear()
    assert gauge(metrics.OUTCOMES_REPORTED) == 0
    with app.app_context():
        observe_reported(services().jobs.outcome_figures, services().registry)
    assert (gauge(metrics.OUTCOMES_REPORTED), gauge(metrics.BELOW_VALIDATION)) == (40, 3)
    assert gauge(metrics.RECENT_BELOW_VALIDATION) == 3

    # those reports were two months ago, and one read since is right: lately it does as its
    # card said, though every report together still falls below it
    date_reports(app, {"W": datetime.now(UTC) - timedelta(days=60)})
    right = {"outcomes": [outcome("R", "pneumonia", 0.9)]}
    assert as_(app, "gateway").post(url("lung-ct", 3), json=right).status_code == 200
    wait_until(lambda: gauge(metrics.OUTCOMES_REPORTED) == 41, 30, "the gauges follow")
    assert (gauge(metrics.BELOW_VALIDATION), gauge(metrics.RECENT_BELOW_VALIDATION)) == (3, 0)
    assert gauge(metrics.CLIENT_BELOW_VALIDATION, "gateway") == 0
    # with no report since, the hourly pass still lets a bad month age out of the window
    date_reports(app, {"W": datetime.now(UTC) - timedelta(days=10), "R": datetime.now(UTC)})
    with app.app_context():
        observe_reported(services().jobs.outcome_figures, services().registry)
    assert gauge(metrics.RECENT_BELOW_VALIDATION) == 3
    date_reports(app, {"W": datetime.now(UTC) - timedelta(days=30), "R": datetime.now(UTC)
                       - timedelta(days=29)})  # fmt: skip
    with app.app_context():
        observe_reported(services().jobs.outcome_figures, services().registry)
    assert gauge(metrics.RECENT_BELOW_VALIDATION) == 0
    text = as_(app, "ci-reader").get("/metrics").get_data(as_text=True)
    assert "client_below_validation{" not in text  # no client reported lately: no gauge left


# A gunicorn worker's gauges, in a multiprocess folder: it works both clients' figures out,
# then, the next time, north's reports have aged out of the window.
SHARED_GAUGES = """
import json, sys, warnings
warnings.simplefilter("error")  # prometheus_client warns where it cannot remove a label set
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from service.training_api import metrics
figures = {"reports": 9, "below_validation": []}
north, south = {"below_validation": ["accuracy", "sensitivity"]}, {"below_validation": []}
metrics.observe_outcomes("lung-ct", 3, figures, figures, {"north": north, "south": south})
metrics.observe_outcomes("lung-ct", 3, figures, figures, {"south": south})
registry = CollectorRegistry()
MultiProcessCollector(registry)
print(json.dumps({s.labels["client"]: repr(s.value) for m in registry.collect()
                  for s in m.samples if s.name == "scantune_model_client_below_validation"}))
"""


def test_under_gunicorn_a_client_gone_from_the_window_loses_its_figure(tmp_path: Path) -> None:
    """prometheus_client cannot remove a label set from a multiprocess folder: the gone
    client's last value stayed, and its alert fired for good. It says NaN, no figure."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", SHARED_GAUGES], env=env, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1]) == {"north": "nan", "south": "0.0"}


def test_the_figures_of_a_window_of_report_times_show_how_the_version_does_lately(
    make_app: Callable[..., Flask], training_env: Path
) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from service.jobs.tables import OutcomeRow
    from service.training_api import services

    publish_version(training_env / "artifacts", "chest-xray", 1, access=ModelAccess(owner="ci"),
                    threshold=CUT, estimates=CLAIMED)  # fmt: skip
    app = make_app()
    reader = as_(app, "ci-reader")
    early = [outcome(f"E{i}", "pneumonia", 0.9) for i in range(6)]  # right, in its first month
    assert as_(app, "gateway").post(url(), json={"outcomes": early}).status_code == 200
    month_ago = datetime.now(UTC) - timedelta(days=30)
    with app.app_context(), services().jobs.store.engine.begin() as conn:
        conn.execute(update(OutcomeRow).values(reported_at=month_ago))
    late = [outcome(f"L{i}", "normal", 0.9) for i in range(4)]  # wrong, since a new scanner
    assert as_(app, "gateway").post(url(), json={"outcomes": late}).status_code == 200

    every = reader.get(url()).get_json()
    assert (every["reports"], every["since"], every["until"]) == (10, None, None)
    week = (datetime.now(UTC) - timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%S")  # UTC, no offset
    lately = reader.get(url(), query_string={"since": week}).get_json()
    assert (lately["reports"], lately["accuracy"]["value"]) == (4, 0.0)
    assert lately["since"].startswith(week) and lately["since"].endswith("+00:00")
    before = reader.get(url(), query_string={"until": week}).get_json()
    assert (before["reports"], before["accuracy"]["value"]) == (6, 1.0)
    backwards = reader.get(url(), query_string={"since": week, "until": "2026-01-01"})
    assert backwards.status_code == 422
    assert "since must be before until" in backwards.get_json()["detail"]
    unread = reader.get(url(), query_string={"since": "last week"})
    assert unread.status_code == 422 and unread.get_json()["errors"][0]["loc"] == "query/since"


def test_with_a_signing_key_an_outcome_must_be_what_this_version_answered(
    make_app: Callable[..., Flask], training_env: Path
) -> None:
    from service.signing import sign

    key = "a-signing-key-both-services-hold"
    for version in (1, 2):
        publish_version(training_env / "artifacts", "chest-xray", version,
                        access=ModelAccess(owner="ci"), threshold=CUT)  # fmt: skip
    app = make_app(prediction_signing_key=key)
    pacs = as_(app, "radiology-pacs")

    def signed(reference: str, version: int, p: float) -> dict[str, Any]:
        return {**outcome(reference, "pneumonia", p),
                "signature": sign(key, "chest-xray", version, said(p))}  # fmt: skip

    taken = pacs.post(url(), json={"outcomes": [signed("A", 1, 0.9), outcome("B", "normal", 0.2)]})
    assert taken.status_code == 200 and taken.get_json()["signed"] == 1  # unsigned: taken
    # the alias moved between the predict and the report: version 2's answer, sent to 1
    moved = pacs.post(url(), json={"outcomes": [signed("C", 1, 0.8), signed("D", 2, 0.7)]})
    assert moved.status_code == 422
    [error] = moved.get_json()["errors"]
    assert error["loc"] == "body/outcomes/1/signature" and "version 1 of" in error["msg"]
    edited = {**signed("E", 1, 0.6), "probabilities": said(0.3)}
    assert pacs.post(url(), json={"outcomes": [edited]}).status_code == 422
    assert as_(app, "ci-reader").get(url()).get_json()["reports"] == 2  # nothing half-kept

    strict = make_app(prediction_signing_key=key, outcomes_signed_only=True)
    unsigned = as_(strict, "radiology-pacs").post(
        url(), json={"outcomes": [outcome("F", "normal", 0.2)]}
    )
    assert unsigned.status_code == 422
    assert unsigned.get_json()["errors"][0]["loc"] == "body/outcomes/0/signature"
    again = as_(strict, "radiology-pacs").post(
        url("chest-xray", 2), json={"outcomes": [signed("D", 2, 0.7)]}
    )
    assert again.status_code == 200 and again.get_json()["signed"] == 1, again.get_json()


def test_a_rotated_key_still_takes_answers_signed_with_the_previous_one(
    make_app: Callable[..., Flask], training_env: Path
) -> None:
    from service.signing import sign

    publish_version(training_env / "artifacts", "chest-xray", 1, access=ModelAccess(owner="ci"),
                    threshold=CUT)  # fmt: skip
    app = make_app(prediction_signing_key="new-key", prediction_signing_key_previous="old-key")
    pacs = as_(app, "radiology-pacs")
    for reference, key, status in (("A", "old-key", 200), ("B", "new-key", 200),
                                   ("C", "other-key", 422)):  # fmt: skip
        sent = {**outcome(reference, "pneumonia", 0.8),
                "signature": sign(key, "chest-xray", 1, said(0.8))}  # fmt: skip
        assert pacs.post(url(), json={"outcomes": [sent]}).status_code == status, key


def test_after_the_salt_is_rotated_a_correction_still_replaces_the_first_report(
    make_app: Callable[..., Flask], training_env: Path
) -> None:
    """Kept references are salted hashes: without the salt before, a scan reported before a
    rotation and corrected after would count twice, and its retraction find nothing."""
    publish_version(training_env / "artifacts", "chest-xray", 1, access=ModelAccess(owner="ci"),
                    threshold=CUT)  # fmt: skip
    unsalted = as_(make_app(audit_salt=""), "radiology-pacs")  # a release before salts
    first = [outcome(r, "normal", 0.2) for r in ("A", "B", "C")]
    assert unsalted.post(url(), json={"outcomes": first}).status_code == 200
    salted = as_(make_app(audit_salt="s1", audit_salt_previous=""), "radiology-pacs")
    answer = salted.post(url(), json={"outcomes": [outcome("A", "pneumonia", 0.2)]})
    assert answer.get_json()["replaced"] == 1
    assert salted.get(url()).get_json()["reports"] == 3
    rotated = as_(make_app(audit_salt="s2", audit_salt_previous="s1"), "radiology-pacs")
    again = [outcome("A", "pneumonia", 0.7), outcome("D", "normal", 0.1)]
    assert rotated.post(url(), json={"outcomes": again}).get_json()["replaced"] == 1
    retracted = rotated.post(f"{url()}/retract", json={"references": ["A", "Z"]}).get_json()
    assert (retracted["retracted"], retracted["unknown"]) == (1, 1)
    figures = rotated.get(url()).get_json()  # B and C (unsalted, two rotations back), D
    assert figures["reports"] == 3 and figures["by_label"] == {"normal": 3, "pneumonia": 0}
    later = rotated.post(url(), json={"outcomes": [outcome("B", "pneumonia", 0.2)]})
    assert later.get_json()["replaced"] == 0  # one rotation is followed, not two


def test_a_scan_reported_under_two_salts_is_kept_once_when_reported_again(tmp_path: Path) -> None:
    from service.jobs.database import make_engine, migrate
    from service.jobs.outcomes import Outcome, OutcomeStore

    engine = make_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    migrate(engine)
    store = OutcomeStore(engine)
    store.report("m", 1, "a", [Outcome("old-A", "normal", said(0.1))])
    store.report("m", 1, "a", [Outcome("new-A", "normal", said(0.2))])  # no earlier given: twice
    assert store.reported("m", 1, None).labels == ["normal", "normal"]
    kept = store.report("m", 1, "a", [Outcome("new-A", "pneumonia", said(0.8), earlier="old-A")])
    assert kept == 1 and store.reported("m", 1, None).labels == ["pneumonia"]
    store.report("m", 1, "a", [Outcome("old-B", "normal", said(0.1))])
    assert store.retract("m", 1, "a", ["new-B", "new-C"], {"new-B": "old-B"}) == 1
    assert store.reported("m", 1, None).labels == ["pneumonia"]
    engine.dispose()


def test_signed_only_needs_a_key() -> None:
    from service.config import TrainingSettings

    with pytest.raises(ValueError, match="needs prediction_signing_key"):
        TrainingSettings(outcomes_signed_only=True)


def test_figures_and_trends_are_worked_out_again_only_when_the_windows_reports_change(
    tmp_path: Path,
) -> None:
    from service.jobs.database import make_engine, migrate
    from service.jobs.outcomes import Outcome, OutcomeFigures, OutcomeStore

    class Counting(OutcomeStore):
        reads = 0

        def reported(self, *args: Any, **kwargs: Any) -> Any:
            self.reads += 1
            return super().reported(*args, **kwargs)

    engine = make_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    migrate(engine)
    store = Counting(engine)
    book, cut = OutcomeFigures(store, size=2), card(threshold=CUT)

    def report(client: str, *outcomes: tuple[str, str, float]) -> None:
        store.report("m", 1, client, [Outcome(r, label, said(p)) for r, label, p in outcomes])

    report("a", ("r1", "pneumonia", 0.9), ("r2", "normal", 0.1))
    first = book.of("m", 1, cut, None)
    assert first == book.of("m", 1, cut, None) and store.reads == 1  # the same: kept
    assert first[0].count == 2 and first[1]["reports"] == 2
    report("a", ("r2", "normal", 0.6))  # a correction: as many reports, a later time
    corrected = book.of("m", 1, cut, None)
    assert store.reads == 2 and corrected[1]["confusion_matrix"] == [[0, 1], [0, 1]]
    report("b", ("r9", "pneumonia", 0.8))
    assert book.of("m", 1, cut, None)[1]["reports"] == 3 and store.reads == 3
    assert book.of("m", 1, cut, "b")[1]["reports"] == 1 and store.reads == 4  # one client's
    book.of("m", 1, cut, "a")  # a third window: the oldest (every client's) is let go
    assert book.of("m", 1, cut, None)[1]["reports"] == 3 and store.reads == 6
    # a trend is kept apart from the figures of the same window, and by its periods
    weeks = book.trend("m", 1, cut, None, "week")
    assert [p["reports"] for p in weeks] == [3] and store.reads == 7
    assert book.trend("m", 1, cut, None, "week") == weeks and store.reads == 7
    assert book.trend("m", 1, cut, None, "month")[0]["reports"] == 3 and store.reads == 8
    retracted = store.retract("m", 1, "b", ["r9"])
    assert retracted == 1 and book.trend("m", 1, cut, None, "week")[0]["reports"] == 2
    engine.dispose()


def date_reports(app: Flask, when: dict[str, datetime]) -> None:
    """Move the reports whose reference starts with each key to that report time (the store
    keeps only hashes: matched through the salted hash the API keeps)."""
    from sqlalchemy import update

    from service.audit import hash_uid
    from service.jobs.tables import OutcomeRow
    from service.training_api import services

    with app.app_context(), services().jobs.store.engine.begin() as conn:
        salt = services().settings.audit_salt
        for prefix, at in when.items():
            references = [hash_uid(f"{prefix}{i}", salt) for i in range(100)]
            references.append(hash_uid(prefix, salt))
            conn.execute(
                update(OutcomeRow)
                .where(OutcomeRow.reference.in_(references))
                .values(reported_at=at)
            )
