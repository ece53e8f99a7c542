"""Fitting a job's model: one model judged on validation, or k fold models judged out of fold.

`fit_job` is the runner's training step: with `recipe.cv_folds` >= 2 it trains one model per
stratified fold of train + validation and returns their `Ensemble` (exported as one graph)
with the pooled out-of-fold logits; otherwise one model and its validation logits. With
`recipe.tta_hflip` the model scores each scan and its mirror, in the graph and here alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from models.crossval import cross_validate, fold_share, pooled, train_split, with_splits
from models.data import Dataset
from models.finetune import input_stats
from models.network import Classifier, Ensemble
from models.progress import ProgressCallback
from models.spec import JobSpec
from models.trainer import FitResult, predict_logits


@dataclass(frozen=True)
class Run:
    """How to run the training: callbacks, resume, device and the checkpoint folder."""

    progress: ProgressCallback | None
    should_stop: Callable[[], bool] | None
    resume: bool
    device: torch.device
    checkpoints: Path
    span: tuple[float, float] = (0.0, 1.0)


@dataclass(frozen=True)
class Fitted:
    """The model to export and the held-out logits it is judged on (`scored.val`'s scans)."""

    model: Classifier | Ensemble
    fit: FitResult
    scored: Dataset
    logits: np.ndarray
    source: Literal["out_of_fold", "validation"]


def fit_single(spec: JobSpec, data: Dataset, model: Classifier, run: Run) -> Fitted:
    trained, fit = train_split(
        spec,
        data,
        run.checkpoints,
        model=model,
        device=run.device,
        progress=run.progress,
        should_stop=run.should_stop,
        span=run.span,
        resume=run.resume,
    )
    final = Ensemble([trained], hflip=True) if spec.recipe.tta_hflip else trained
    mean, std = input_stats(spec)
    logits = predict_logits(final, data.val.images, mean, std, torch.device("cpu"))
    return Fitted(final, fit, data, logits, "validation")


def fit_cv(spec: JobSpec, data: Dataset, model: Classifier, run: Run) -> Fitted:
    """k fold models from copies of `model`, judged on their pooled out-of-fold logits."""
    cv = cross_validate(
        spec,
        data,
        spec.recipe.cv_folds,
        initial=model,
        hflip=spec.recipe.tta_hflip,
        workdir=run.checkpoints,
        device=run.device,
        progress=run.progress,
        should_stop=run.should_stop,
        span=run.span,
        resume=run.resume,
    )
    scored = with_splits(data, data.train, pooled(data))
    ensemble = Ensemble(cv.models, hflip=spec.recipe.tta_hflip).eval()
    return Fitted(ensemble, cv.fit(), scored, cv.oof_logits, "out_of_fold")


def scans_per_model(spec: JobSpec, data: Dataset) -> int:
    """How many scans each model of the job trains on: the training split, or k - 1 of k
    folds of training + validation scans."""
    if spec.recipe.cv_folds >= 2:
        return fold_share(len(data.train.labels) + len(data.val.labels), spec.recipe.cv_folds)
    return len(data.train.labels)


def fit_job(spec: JobSpec, data: Dataset, model: Classifier, run: Run) -> Fitted:
    """Cross-validated when the recipe asks for folds, else one model."""
    if spec.recipe.cv_folds >= 2:
        return fit_cv(spec, data, model, run)
    return fit_single(spec, data, model, run)
