"""Cross-validation: fold assignment, the schedule in steps, and a cross-validated job whose
card is judged out of fold and whose one ONNX graph holds every fold model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.crossval import stratified_holdout
from models.data import Dataset, Split
from models.finetune import build_model, sized_epochs
from models.progress import ProgressEvent
from models.runner import run_training
from models.spec import JobSpec
from models.splits import stratified_folds
from models.trainer import Trainer


def test_folds_are_stratified_and_even() -> None:
    labels = np.r_[np.zeros(31), np.ones(92)].astype(np.int64)
    folds = stratified_folds(labels, 3, seed=0)
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 1 and sizes.sum() == 123
    for fold in range(3):
        positives = labels[folds == fold].mean()
        assert abs(positives - 92 / 123) < 0.02
    assert not np.array_equal(folds, stratified_folds(labels, 3, seed=1))


def test_holdout_takes_a_fraction_of_each_class() -> None:
    labels = np.r_[np.zeros(40), np.ones(160)].astype(np.int64)
    kept, held = stratified_holdout(labels, 0.15, seed=0)
    assert len(np.intersect1d(kept, held)) == 0 and len(kept) + len(held) == 200
    assert np.bincount(labels[held]).tolist() == [6, 24]


def test_a_schedule_in_steps_gives_small_sets_more_epochs(spec_factory) -> None:
    spec = spec_factory(epochs=None, recipe={"batch_size": 64, "schedule_steps": 600})
    assert sized_epochs(spec, 500).epochs == 86  # 7 steps an epoch
    assert sized_epochs(spec, 5000).epochs == 8  # 78 steps an epoch
    assert sized_epochs(spec, 100_000).epochs == 6  # never fewer than the old default
    assert sized_epochs(spec, 20).epochs == 500  # one step an epoch: capped


def test_the_default_schedule_is_unchanged_at_full_size_and_longer_for_small_sets() -> None:
    spec = JobSpec.model_validate({"model_name": "m", "dataset": {"uri": "/data.npz"}})
    assert spec.epochs is None and spec.recipe.schedule_steps == 400
    assert sized_epochs(spec, 4708).epochs == 6  # the shared PneumoniaMNIST training split
    assert sized_epochs(spec, 546).epochs == 50  # a small hospital set: 8 steps an epoch
    assert sized_epochs(spec, 283).epochs == 100


def test_an_explicit_epochs_or_no_step_target_keeps_the_epochs(spec_factory) -> None:
    assert sized_epochs(spec_factory(epochs=3), 500).epochs == 3
    untargeted = spec_factory(epochs=None, recipe={"schedule_steps": None})
    assert sized_epochs(untargeted, 500).epochs == 6


def _tiny(arrays: dict[str, np.ndarray], n_val: int) -> Dataset:
    """160 prepared training scans and `n_val` validation scans at 32 px."""
    from models.scans import prepare

    def split(name: str, n: int) -> Split:
        images = arrays[f"{name}_images"][:n].astype(np.float32) / 255
        prepared = np.stack([prepare(im, 32, 1) for im in images])
        return Split(prepared, arrays[f"{name}_labels"][:n].ravel().astype(np.int64), [])

    return Dataset(["normal", "pneumonia"], split("train", 160), split("val", n_val), "", "", "")


@pytest.mark.slow
def test_a_tiny_validation_split_picks_no_epoch(
    spec_factory, pneumonia_arrays: dict[str, np.ndarray], tmp_path: Path
) -> None:
    recipe = {"early_stopping_patience": 1, "lr": 1e-6}  # small_val: last_epoch by default
    spec = spec_factory(epochs=3, recipe=recipe)
    data = _tiny(pneumonia_arrays, n_val=40)
    fit = Trainer(build_model(spec, 2), spec, data, tmp_path).fit()
    # an lr this small cannot steadily improve the validation AUC, yet every epoch runs and
    # the last one is kept: 40 scans are too few to stop on or pick an epoch by
    assert fit.epochs_run == 3 and fit.best_epoch == 3


def test_patience_spans_the_same_training_however_short_the_epochs() -> None:
    from models.finetune import PATIENCE_STEP_UNIT, patience_epochs

    assert patience_epochs(3, 73) == 3  # about 4,700 scans at batch 64: epochs as they are
    assert patience_epochs(3, PATIENCE_STEP_UNIT) == 3
    assert patience_epochs(3, 6) == 32  # 444 scans: 3 x 64 steps' worth of short epochs
    assert patience_epochs(1, 5) == 13
    assert patience_epochs(0, 6) == 0  # off stays off


def _flat(spec_factory, **recipe):
    """A 3-epoch run of the head alone at an lr too small to move the validation loss, so
    no epoch improves on the first; patience 1 on that loss."""
    phases = [{"epochs": 3, "unfreeze_from": None, "lr": 1e-12}]
    recipe |= {"early_stopping_patience": 1, "monitor": "val_loss", "phases": phases}
    return spec_factory(epochs=3, recipe=recipe)


@pytest.mark.slow
@pytest.mark.parametrize(("batch", "epochs_run"), [(32, 3), (2, 2)])
def test_early_stopping_waits_for_enough_steps_not_enough_epochs(
    spec_factory, pneumonia_arrays: dict[str, np.ndarray], tmp_path: Path, batch, epochs_run
) -> None:
    # 160 scans at batch 32 are 5 steps an epoch, so patience 1 waits 13 epochs and all 3
    # run; at batch 2 (80 steps) one flat epoch is enough to stop.
    spec = _flat(spec_factory, batch_size=batch)
    data = _tiny(pneumonia_arrays, n_val=400)  # 50+ of each class: a trusted split
    fit = Trainer(build_model(spec, 2), spec, data, tmp_path).fit()
    assert fit.epochs_run == epochs_run and fit.best_epoch == 1


@pytest.mark.slow
def test_fold_models_keep_their_last_weights_even_on_a_trusted_fold(
    spec_factory, pneumonia_arrays: dict[str, np.ndarray]
) -> None:
    from models.crossval import cross_validate

    # each held-out fold (280 scans, 50+ of each class) could judge; a fold model still
    # keeps its last epoch, since its held-out fold must stay unseen for the out-of-fold scores
    spec = _flat(spec_factory)
    cv = cross_validate(spec, _tiny(pneumonia_arrays, n_val=400), 2)
    assert [f.fit.epochs_run for f in cv.folds] == [3, 3]
    assert [f.fit.best_epoch for f in cv.folds] == [3, 3]


@pytest.mark.slow
def test_a_job_without_epochs_runs_and_records_the_sized_schedule(
    spec_factory, tmp_path: Path
) -> None:
    spec = spec_factory(epochs=None, recipe={"schedule_steps": 40})  # 160 scans: 5 steps/epoch
    result = run_training(spec, tmp_path)
    assert result.metrics["epochs_run"] == 8
    assert result.card.recipe["epochs"] == 8
    assert sum(p["epochs"] for p in result.card.recipe["phases"]) == 8


@pytest.mark.slow
def test_a_cross_validated_job(spec_factory, tmp_path: Path) -> None:
    import onnx
    from torch import nn

    from models.finetune import build_model

    recipe = {"cv_folds": 2, "tta_hflip": True}
    spec = spec_factory(recipe=recipe)
    events: list[ProgressEvent] = []
    result = run_training(spec, tmp_path, progress=events.append)
    card = result.card
    assert result.metrics["estimated_on"] == "out_of_fold"
    assert card.threshold is not None and card.threshold.chosen_on == "out_of_fold"
    assert card.threshold.chosen_on_images == 224  # 160 train + 64 validation scans, pooled
    assert card.estimates["auc"].source == "out_of_fold" and card.estimates["auc"].images == 224
    assert card.metrics["val_auc"] > 0.7
    assert {r["fold"] for r in result.history} == {1, 2}
    # the job's progress counts epochs across the folds: 1 epoch each, 2 in all
    done = [(e.epoch, e.epochs) for e in events if e.metrics and e.epoch is not None]
    assert done == [(1, 2), (2, 2)]
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions)
    assert card.parity.max_abs_diff <= 1e-4
    graph = onnx.load(str(result.onnx_path)).graph
    convs = sum(isinstance(m, nn.Conv2d) for m in build_model(spec, 2).modules())
    # both fold models are in the graph, each run once on the scan and its mirror together
    assert sum(n.op_type == "Conv" for n in graph.node) == 2 * convs
    assert any(n.op_type == "Concat" for n in graph.node)
    assert [o.name for o in graph.output] == ["probabilities", "logits", "cam"]
