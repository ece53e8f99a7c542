"""The promotion gate: minimums, the lower ends of the card's intervals, its caveats, beating
the current version, and the alias it moves."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from models.card import (
    Calibration,
    DatasetInfo,
    Estimate,
    InputSpec,
    ModelCard,
    Parity,
    TrainingInfo,
)
from models.promote import PromoteSpec
from models.spec import JobSpec
from service.jobs.promotion import apply_gate, decide, metric_value
from service.registry import Registry
from service.storage import open_store


def card(
    metrics: dict[str, float], *, onnx: bytes = b"onnx", version: int | None = None
) -> ModelCard:
    return ModelCard(
        name="chest-xray",
        version=version,
        classes=("normal", "pneumonia"),
        input=InputSpec(size=32, channels=1, mean=(0.5,), std=(0.25,)),
        base_model="resnet18",
        dataset=DatasetInfo(uri="/data/x.npz", format="npz", sha256="0" * 64),
        metrics=metrics,
        calibration=Calibration(temperature=1.0, applied_in_graph=True),
        parity=Parity(max_abs_diff=0.0, images=32, tolerance=1e-4),
        training=TrainingInfo(
            seconds=1.0, device="cpu", hardware="t", epochs_run=1, best_epoch=1, seed=0
        ),
        onnx_sha256=hashlib.sha256(onnx).hexdigest(),
    )


def test_metric_lookup() -> None:
    assert metric_value({"val_auc": 0.9}, "val_auc") == 0.9
    assert metric_value({"val": {"auc": 0.8}}, "val_auc") == 0.8
    assert metric_value({"val_auc": 0.7}, "auc") == 0.7
    assert metric_value({"val_auc": "high"}, "val_auc") is None


def test_minimums() -> None:
    gate = PromoteSpec(alias="production", min={"val_auc": 0.95, "val_accuracy": 0.8})
    ok = decide(gate, card({"val_auc": 0.96, "val_accuracy": 0.9}), None, monitor="val_auc")
    assert ok["passed"] and ok["figures"]["val_auc"] == {"value": 0.96, "min": 0.95}
    low = decide(gate, card({"val_auc": 0.94, "val_accuracy": 0.9}), None, monitor="val_auc")
    assert not low["passed"] and "val_auc 0.9400 is below the minimum 0.95" in low["reason"]
    missing = decide(gate, card({"val_auc": 0.99}), None, monitor="val_auc")
    assert not missing["passed"] and "val_accuracy is not among" in missing["reason"]


@pytest.mark.parametrize(
    ("new", "old", "passed"), [(0.91, 0.90, True), (0.90, 0.90, False), (0.85, 0.90, False)]
)
def test_beat_current(new: float, old: float, passed: bool) -> None:
    gate = PromoteSpec(alias="production", beat_current=True)
    current = card({"val_auc": old}, version=3)
    decision = decide(gate, card({"val_auc": new}), current, monitor="val_auc")
    assert decision["passed"] is passed
    assert decision["figures"]["val_auc"] == {"value": new, "current": old}
    assert decision["figures"]["current_version"] == 3
    assert decision["figures"]["same_scans"] is True  # the same data, split alike
    other = current.model_copy(
        update={"dataset": current.dataset.model_copy(update={"sha256": "1" * 64})}
    )
    elsewhere = decide(gate, card({"val_auc": new}), other, monitor="val_auc")["figures"]
    assert elsewhere["same_scans"] is False and elsewhere["measured"].startswith("trained on other")


def test_beat_current_lower_is_better_for_loss() -> None:
    gate = PromoteSpec(alias="staging", beat_current=True)
    current = card({"val_loss": 0.5}, version=1)
    assert decide(gate, card({"val_loss": 0.4}), current, monitor="val_loss")["passed"]
    assert not decide(gate, card({"val_loss": 0.6}), current, monitor="val_loss")["passed"]


def test_maximums_bound_a_loss_or_a_calibration_error() -> None:
    gate = PromoteSpec(alias="production", max={"val_ece_calibrated": 0.05, "nll_calibrated": 0.3})
    ok = card({"val_ece_calibrated": 0.03, "val_nll_calibrated": 0.3})
    decision = decide(gate, ok, None, monitor="val_auc")
    assert decision["passed"], decision["reason"]
    assert decision["figures"]["val_ece_calibrated"] == {"value": 0.03, "max": 0.05}
    off = decide(gate, card({"val_ece_calibrated": 0.08, "val_nll_calibrated": 0.2}), None,
                 monitor="val_auc")  # fmt: skip
    assert not off["passed"]
    assert off["reason"] == "val_ece_calibrated 0.0800 is above the maximum 0.05"
    # beating the serving version on a `max` figure is being lower than it
    beat = PromoteSpec(alias="production", max={"nll_calibrated": 1.0}, beat_current=True)
    current = card({"val_nll_calibrated": 0.4}, version=2)
    assert decide(beat, card({"val_nll_calibrated": 0.3}), current, monitor="val_auc")["passed"]
    worse = decide(beat, card({"val_nll_calibrated": 0.5}), current, monitor="val_auc")
    assert "nll_calibrated 0.5000 does not beat version 2's 0.4000" in worse["reason"]


@pytest.mark.parametrize(
    ("gate", "says"),
    [
        ({"min": {"val_acu": 0.9}}, "val_acu is not a figure the card records; `min` takes"),
        ({"min": {"temperature": 1.0}}, "temperature is not a figure the card records"),
        ({"max": {"ece": 1.2}}, "ece lies between 0 and 1"),
        ({"min": {"accuracy": 90}}, "accuracy lies between 0 and 1 (a fraction, not a percentage)"),
        ({"min": {"val_loss": 0.2}}, "val_loss is better lower: bound it in `max`"),
        ({"max": {"auc": 0.99}}, "auc is better higher: bound it in `min`"),
        ({"max": {"val_loss": -0.1}}, "val_loss is never negative"),
        ({"min_lower": {"auc": 1.5}}, "auc lies between 0 and 1"),
    ],
)
def test_a_gate_it_could_never_weigh_is_refused_at_submit(gate: dict, says: str) -> None:
    """Refused in the spec, not found out after the training: a typo, a percentage, a loss
    given a minimum would each fail (or pass) every job."""
    with pytest.raises(ValueError) as refused:
        PromoteSpec(alias="production", **gate)
    assert says in str(refused.value)


def test_a_gate_on_the_threshold_needs_two_classes() -> None:
    spec = {"model_name": "m", "dataset": {"uri": "x.npz", "classes": ["a", "b", "c"]}}
    for gate in ({"min_lower": {"auc": 0.8}}, {"min": {"accuracy_at_threshold": 0.8}}):
        with pytest.raises(ValueError, match="for two classes only; this dataset names 3"):
            JobSpec.model_validate(spec | {"promote": {"alias": "p"} | gate})
    JobSpec.model_validate(spec | {"promote": {"alias": "p", "min": {"accuracy": 0.8}}})
    two = {"uri": "x.npz", "classes": ["a", "b"]}
    JobSpec.model_validate(
        spec | {"dataset": two, "promote": {"alias": "p", "min_lower": {"auc": 0.8}}}
    )


def test_the_lower_end_of_an_interval_and_the_cards_caveats_can_stop_a_promotion() -> None:
    narrow = Estimate(value=0.95, low=0.93, high=0.97, images=600, source="out_of_fold")
    wide = Estimate(value=0.95, low=0.81, high=1.0, images=64, source="validation")
    gate = PromoteSpec(alias="production", min_lower={"auc": 0.9}, refuse=["few_scans"])
    sure = card({"val_auc": 0.95}).model_copy(update={"estimates": {"auc": narrow}})
    decision = decide(gate, sure, None, monitor="val_auc")
    assert decision["passed"], decision["reason"]
    assert decision["figures"]["auc_lower"] == {"value": 0.93, "min": 0.9}
    assert decision["figures"]["caveats"] == ["no_modality"]  # present, but not refused
    # the same point estimate on 64 validation scans: its interval and its caveat say no
    unsure = card({"val_auc": 0.95}).model_copy(update={"estimates": {"auc": wide}})
    refused = decide(gate, unsure, None, monitor="val_auc")
    assert not refused["passed"]
    reaches = "auc's 95% interval reaches down to 0.8100, below the minimum 0.9 (on 64 scans)"
    assert reaches in refused["reason"]
    assert "caveat few_scans: Its figures rest on 64 scans" in refused["reason"]
    bare = decide(gate, card({"val_auc": 0.99}), None, monitor="val_auc")  # an older card
    assert not bare["passed"] and "the card records no interval of auc" in bare["reason"]
    with pytest.raises(ValueError, match="min_lower"):
        PromoteSpec(alias="production", min_lower={"val_auc": 0.9})
    with pytest.raises(ValueError, match="refuse"):
        PromoteSpec(alias="production", refuse=["decision_aid"])  # said of every version


def test_apply_moves_the_alias_only_when_passed(tmp_path: Path) -> None:
    registry = Registry(open_store(tmp_path.as_uri()))
    for version, auc in ((1, 0.90), (2, 0.95), (3, 0.93)):
        src = tmp_path / f"run{version}"
        src.mkdir()
        onnx = f"onnx{version}".encode()
        (src / "model.onnx").write_bytes(onnx)
        registry.publish("chest-xray", version, src, card({"val_auc": auc}, onnx=onnx))
    gate = PromoteSpec(alias="production", min={"val_auc": 0.5}, beat_current=True)
    for version in (1, 2, 3):
        published = registry.get_card("chest-xray", version)
        decision = apply_gate(registry, gate, published, monitor="val_auc", actor="job:x")
        assert decision["passed"] is (version != 3)
    record = registry.get_alias("chest-xray", "production")
    assert record.version == 2 and record.set_by == "job:x"
