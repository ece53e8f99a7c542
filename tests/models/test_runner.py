"""run_training end to end on real PneumoniaMNIST images, resume, cancellation, the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from models import scans
from models.card import ModelCard
from models.data import DataError
from models.evaluate import softmax
from models.export import onnx_outputs
from models.progress import ProgressEvent, TrainingCancelled
from models.promote import AT_LEAST, AT_MOST
from models.runner import run_training
from models.trainer import predict_logits
from models.uri import sha256_file
from service.cli import main as cli_main

pytestmark = pytest.mark.slow
NOTES = {"purpose": "a second read of chest films", "limitations": ["not tested on children"]}


@pytest.fixture(scope="module")
def trained(pneumonia_small_npz: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from tests.models.conftest import make_spec

    out = tmp_path_factory.mktemp("run")
    events: list[ProgressEvent] = []
    spec = make_spec(pneumonia_small_npz, notes=NOTES)
    result = run_training(spec, out, progress=events.append)
    return {"result": result, "out": out, "events": events}


def test_writes_every_artifact(trained: dict[str, Any]) -> None:
    out: Path = trained["out"]
    for name in ("model.onnx", "card.json", "metrics.json", "history.json"):
        assert (out / name).is_file(), name
    for name in ("training_curves.png", "confusion_matrix.png", "roc.png"):
        assert (out / "plots" / name).read_bytes().startswith(b"\x89PNG")
    assert {p.name for p in (out / "checkpoints").iterdir()} == {"last.pt", "best.pt"}
    assert len(json.loads((out / "history.json").read_text())) == 1


def test_card_describes_the_model(trained: dict[str, Any], pneumonia_small_npz: Path) -> None:
    out: Path = trained["out"]
    card = ModelCard.from_json((out / "card.json").read_text())
    assert card == trained["result"].card
    assert card.onnx_sha256 == sha256_file(out / "model.onnx")
    assert card.input.preprocessing_version == scans.PREPROCESSING_VERSION
    assert card.version is None and card.classes == ("normal", "pneumonia")
    assert (card.input.size, card.input.channels, card.input.mean, card.input.std) == (
        32,
        1,
        (0.5,),
        (0.5,),
    )
    assert card.dataset.sha256 == sha256_file(pneumonia_small_npz)
    assert card.dataset.class_counts["val"] == {"normal": 32, "pneumonia": 32}
    assert (card.dataset.split_by, card.dataset.patients) == ("scan", None)  # npz names none
    assert card.parity.images >= 32 and card.parity.max_abs_diff <= 1e-4
    assert card.calibration.applied_in_graph and card.calibration.temperature > 0
    assert card.threshold is not None and card.threshold.positive_class == "pneumonia"
    # 32 scans of each class is too few to pick a threshold on: 0.5 of the prior-corrected
    # posterior, which for a balanced training set is 0.5 itself
    assert (card.threshold.chosen_on, card.threshold.value) == ("prior", 0.5)
    assert set(card.estimates) == {"auc", "sensitivity", "specificity"}
    auc = card.estimates["auc"]
    assert auc.source == "validation" and auc.images == 64
    assert auc.low < auc.value < auc.high and abs(auc.value - card.metrics["val_auc"]) < 1e-6
    assert card.training.epochs_run == 1 and card.packages["torch"]
    assert card.metrics["val_auc"] > 0.75  # one head-only epoch on 160 images already separates
    # every figure a promotion gate may bound is one the card records (`models.spec`)
    assert set(AT_LEAST + AT_MOST) <= {k for k, v in card.metrics.items() if isinstance(v, float)}
    assert card.recipe["batch_size"] == 32 and card.base_model == "efficientnet_lite0"
    assert card.notes is not None and card.notes.model_dump() == {
        **NOTES,
        "contact": None,
        "limitations": tuple(NOTES["limitations"]),
    }  # the team's words, as the spec gave them
    assert card.recipe["phases"] == [
        {"epochs": 1, "unfreeze_from": None, "lr": 2e-3, "lr_decay": 1.0}
    ]


def test_inference_preprocessing_reproduces_training(
    trained: dict[str, Any], pneumonia_small_npz: Path, tmp_path: Path
) -> None:
    """PNGs of validation scans, decoded and preprocessed as the inference service does, give
    through ONNX the probabilities the trained PyTorch model gives on the npz arrays."""
    card: ModelCard = trained["result"].card
    with np.load(pneumonia_small_npz) as raw:
        images = raw["val_images"][:4]
    paths = [tmp_path / f"{i}.png" for i in range(len(images))]
    for scan, path in zip(images, paths, strict=True):
        Image.fromarray(scan).save(path)
    batch = scans.to_batch([scans.read_file(p) for p in paths], card.input)
    served = onnx_outputs(trained["out"] / "model.onnx", batch)["probabilities"]
    state = torch.load(trained["out"] / "checkpoints" / "best.pt", weights_only=True)["model"]
    prepared = np.stack([scans.prepare(s.astype(np.float32) / 255, 32, 1) for s in images])
    logits = predict_logits(
        _model_for(card, state), prepared, card.input.mean, card.input.std, torch.device("cpu")
    )
    assert np.abs(served - softmax(logits, card.calibration.temperature)).max() < 1e-5


def _model_for(card: ModelCard, state: dict[str, Any]) -> Any:
    from models.finetune import build_model
    from models.spec import JobSpec

    spec = JobSpec.model_validate(
        {
            "model_name": "x",
            "dataset": {"uri": "unused"},
            "pretrained": False,
            "image_size": card.input.size,
        }
    )
    net = build_model(spec, len(card.classes))
    net.load_state_dict(state)
    return net.eval()


def test_progress_events(trained: dict[str, Any]) -> None:
    events: list[ProgressEvent] = trained["events"]
    phases = [e.phase for e in events]
    assert phases[0] == "preparing_data" and phases[-1] == "exporting"
    order = ["preparing_data", "training", "evaluating", "exporting"]
    assert [order.index(p) for p in phases] == sorted(order.index(p) for p in phases)
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    steps = [e for e in events if e.phase == "training" and not e.metrics]
    assert len(steps) == 5 and steps[-1].step == steps[-1].steps == 5  # 160 images / 32
    epoch_end = [e for e in events if e.phase == "training" and e.metrics]
    assert epoch_end[0].epoch == 1 and "val_auc" in epoch_end[0].metrics
    json.dumps([e.to_dict() for e in events])


def test_resume_continues_to_the_same_result(spec_factory, tmp_path: Path) -> None:
    spec = spec_factory(epochs=2, image_size=24, dataset={"limit": 64})
    straight = run_training(spec, tmp_path / "straight")
    calls = {"n": 0}

    def stop_in_second_epoch() -> bool:
        calls["n"] += 1
        return calls["n"] > 3  # epoch 1 has 2 steps; stop at step 2 of epoch 2

    with pytest.raises(TrainingCancelled):
        run_training(spec, tmp_path / "resumed", should_stop=stop_in_second_epoch)
    assert not (tmp_path / "resumed" / "card.json").exists()
    resumed = run_training(spec, tmp_path / "resumed", resume=True)
    a, b = straight.history, resumed.history
    assert [r["epoch"] for r in b] == [1, 2]
    for key in ("train_loss", "val_loss", "val_auc", "val_accuracy"):
        assert b[-1][key] == pytest.approx(a[-1][key], abs=1e-5), key
    assert resumed.metrics["val_auc"] == pytest.approx(straight.metrics["val_auc"], abs=1e-5)
    other = spec.model_copy(update={"seed": 7})
    with pytest.raises(ValueError, match="another job spec"):
        run_training(other, tmp_path / "resumed", resume=True)


def test_cancel_before_training(spec_factory, tmp_path: Path) -> None:
    with pytest.raises(TrainingCancelled):
        run_training(spec_factory(), tmp_path, should_stop=lambda: True)


def test_bad_data_fails_before_training(spec_factory, tmp_path: Path) -> None:
    path = tmp_path / "one_class.npz"
    np.savez(
        path, train_images=np.zeros((4, 8, 8), np.uint8), train_labels=np.zeros((4, 1), np.uint8)
    )
    with pytest.raises(DataError, match="fewer than 2 classes"):
        run_training(spec_factory(dataset={"uri": str(path), "classes": None}), tmp_path / "out")
    assert not (tmp_path / "out" / "checkpoints").exists()


# --- scantune train ------------------------------------------------------------------------


def _write_job(tmp_path: Path, data: Path, **extra: Any) -> Path:
    job = {
        "model_name": "cli-model",
        "dataset": {"uri": str(data), "format": "npz", "classes": ["normal", "pneumonia"]},
        "image_size": 32,
        "epochs": 1,
        "recipe": {"batch_size": 32},
        **extra,
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def test_cli_trains_and_prints_a_summary(
    pneumonia_small_npz: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = _write_job(
        tmp_path,
        pneumonia_small_npz,
        dataset={"uri": str(pneumonia_small_npz), "limit": 64, "classes": ["normal", "pneumonia"]},
    )
    assert cli_main(["train", "--config", str(job), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "cli-model (efficientnet_lite0, 32px)" in out and "val_auc" in out
    assert (tmp_path / "out" / "card.json").is_file()


def test_cli_reports_bad_data_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = _write_job(tmp_path, tmp_path / "missing.npz")
    assert cli_main(["train", "--config", str(job), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("scantune train: error:") and "missing.npz" in err[-1]
    assert "Traceback" not in "\n".join(err)


def test_cli_reports_spec_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("model_name: Bad Name\ndataset: {uri: x}\nbase_model: alexnet\n")
    assert cli_main(["train", "--config", str(job), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "invalid job spec" in err and "base_model" in err and "Traceback" not in err
