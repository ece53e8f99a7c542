"""The budgeted search: a tiny budget on tiny data, the budget kept, the best config trained."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest

from models.crossval import pooled
from models.data import Dataset, Split
from models.finetune import build_model
from models.progress import ProgressEvent
from models.runner import run_training
from models.search import configure, run_search


def test_a_configuration_scales_the_augmentation_and_drops_the_search(spec_factory) -> None:
    spec = spec_factory(recipe={"search": {"budget_minutes": 1}})
    params = {"lr": 3e-3, "label_smoothing": 0.1, "augment_strength": 2.0, "epochs": 5}
    tuned = configure(spec, params)
    assert tuned.recipe.search is None and tuned.epochs == 5
    assert (tuned.recipe.lr, tuned.recipe.label_smoothing) == (3e-3, 0.1)
    assert tuned.recipe.augment.rotate_degrees == 2 * spec.recipe.augment.rotate_degrees
    assert tuned.recipe.augment.scale == pytest.approx((0.9, 1.1))
    assert configure(spec, {}).recipe.augment == spec.recipe.augment


def _tiny(arrays: dict[str, np.ndarray]) -> Dataset:
    from models.scans import prepare

    def split(name: str, n: int) -> Split:
        images = arrays[f"{name}_images"][:n].astype(np.float32) / 255
        prepared = np.stack([prepare(im, 32, 1) for im in images])
        return Split(prepared, arrays[f"{name}_labels"][:n].ravel().astype(np.int64), [])

    return Dataset(["normal", "pneumonia"], split("train", 120), split("val", 40), "", "", "")


@pytest.mark.slow
def test_the_budget_stops_a_running_trial(
    spec_factory, pneumonia_arrays: dict[str, np.ndarray]
) -> None:
    spec = spec_factory(epochs=4, recipe={"search": {"budget_minutes": 0.02, "folds": 2}})
    data = _tiny(pneumonia_arrays)
    started = time.monotonic()
    result = run_search(spec, data, build_model(spec, 2))
    assert time.monotonic() - started < 30  # 1.2 s budget; no trial of 2 folds fits in it
    assert [t["state"] for t in result.trials] == ["PRUNED"]
    assert result.best_auc is None and result.spec.recipe.search is None
    assert result.spec.recipe.lr == spec.recipe.lr  # nothing finished: the spec as given
    assert len(pooled(data).labels) == 160


@pytest.mark.slow
def test_a_trial_keeps_each_fold_model_s_last_weights(
    spec_factory, pneumonia_arrays: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    import models.search
    from models.crossval import train_split

    seen: list[tuple[bool, int, int]] = []

    def watched(*args, **kwargs):  # the real training, its choice of weights recorded
        model, fit = train_split(*args, **kwargs)
        seen.append((kwargs.get("pick_on_val", True), fit.best_epoch, fit.epochs_run))
        return model, fit

    monkeypatch.setattr(models.search, "train_split", watched)
    search = {"budget_minutes": 3, "folds": 2, "max_trials": 1}
    spec = spec_factory(epochs=2, recipe={"search": search})
    run_search(spec, _tiny(pneumonia_arrays), build_model(spec, 2))
    # the held-out fold scores the trial, so it may not also pick the fold model's epoch
    assert seen and all(not pick and best == run for pick, best, run in seen)


@pytest.mark.slow
def test_a_job_searches_then_trains_the_best_configuration(
    spec_factory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    search = {"budget_minutes": 3, "folds": 2, "max_trials": 2}
    spec = spec_factory(epochs=1, recipe={"search": search})
    events: list[ProgressEvent] = []
    with caplog.at_level(logging.INFO, logger="scantune.search"):
        result = run_training(spec, tmp_path, progress=events.append)

    summary = result.card.recipe["search"]
    assert summary["trials"] == 2 and summary["complete"] >= 1
    assert 0.5 < summary["best_oof_auc"] <= 1.0
    best = summary["best"]
    assert result.card.recipe["lr"] == pytest.approx(best["lr"])  # the final model used it
    assert result.card.recipe["epochs"] == best["epochs"]
    logged = [r.getMessage() for r in caplog.records if "search trial" in r.getMessage()]
    assert len(logged) == 2 and "search trial 1" in logged[0]
    trials = [e.metrics["search_trial"] for e in events if "search_trial" in e.metrics]
    assert trials == [1.0, 2.0]
    assert (tmp_path / "checkpoints" / "search.json").exists()
