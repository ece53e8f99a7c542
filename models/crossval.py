"""Stratified k-fold cross-validation: fold models, out-of-fold predictions, their ensemble;
folds of whole patients where the data names them (`models.splits`).

Used by the recipe when `recipe.cv_folds` >= 2 (train + validation are pooled and each scan
is scored by the one fold model that did not train on it), by the budgeted search (which
ranks configurations on out-of-fold AUC) and by `bench/quality.py`.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from models.data import Dataset, Split
from models.finetune import build_model, input_stats
from models.network import Classifier, Ensemble
from models.progress import ProgressCallback, ProgressEvent
from models.spec import JobSpec
from models.splits import folds as deal
from models.splits import holdout
from models.trainer import FitResult, Trainer, predict_logits


def fold_share(n: int, k: int) -> int:
    """How many of `n` scans each model of a k-fold split trains on (k - 1 folds of k)."""
    return n * (k - 1) // k


def stratified_holdout(
    labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices kept and held out: about `fraction` of each class (at least one) held out."""
    return holdout(labels, None, fraction, seed)


def subset(split: Split, index: np.ndarray) -> Split:
    names = [split.names[i] for i in index] if split.names else []
    groups = None if split.groups is None else split.groups[index]
    return Split(split.images[index], split.labels[index], names, groups)


def pooled(data: Dataset) -> Split:
    """Training and validation scans as one split (cross-validation draws its own); with
    their patients where both name them."""
    train, val = data.train.groups, data.val.groups
    return Split(
        np.concatenate([data.train.images, data.val.images]),
        np.concatenate([data.train.labels, data.val.labels]),
        [*data.train.names, *data.val.names],
        None if train is None or val is None else np.concatenate([train, val]),
    )


def with_splits(data: Dataset, train: Split, val: Split) -> Dataset:
    return replace(data, train=train, val=val)


@dataclass
class FoldRun:
    model: Classifier
    fit: FitResult
    holdout: np.ndarray
    logits: np.ndarray


@dataclass
class CrossValidation:
    """k fold models and each pooled scan's logits from the model that did not see it."""

    folds: list[FoldRun]
    labels: np.ndarray
    oof_logits: np.ndarray

    @property
    def models(self) -> list[Classifier]:
        return [f.model for f in self.folds]

    def fit(self) -> FitResult:
        """The folds' training as one result: every epoch record tagged with its fold."""
        fits = [f.fit for f in self.folds]
        seconds = sum(f.seconds for f in fits)
        images = sum(f.train_images_per_s * f.seconds for f in fits)
        return FitResult(
            history=[r | {"fold": i + 1} for i, f in enumerate(fits) for r in f.history],
            best_epoch=int(np.median([f.best_epoch for f in fits])),
            best_value=float(np.mean([f.best_value for f in fits])),
            epochs_run=sum(f.epochs_run for f in fits),
            seconds=seconds,
            train_images_per_s=images / max(seconds, 1e-9),
        )


def _numbered(progress: ProgressCallback | None, fold: int, k: int) -> ProgressCallback | None:
    """Progress with epochs counted across folds (fold 2's first epoch is E + 1 of k * E)."""
    if progress is None:
        return None

    def emit(event: ProgressEvent) -> None:
        if event.epoch is None or event.epochs is None:
            return progress(event)
        epochs = event.epochs
        progress(replace(event, epoch=event.epoch + fold * epochs, epochs=k * epochs))

    return emit


def train_split(
    spec: JobSpec,
    data: Dataset,
    workdir: Path,
    *,
    model: Classifier | None = None,
    device: torch.device | None = None,
    progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    span: tuple[float, float] = (0.0, 1.0),
    resume: bool = False,
    pick_on_val: bool = True,
) -> tuple[Classifier, FitResult]:
    """One model trained by the recipe on `data.train`, monitored on `data.val`.

    `model` is the untrained starting point (default: `build_model` with package weights);
    `pick_on_val=False` runs the whole schedule and keeps the last weights.
    """
    model = model or build_model(spec, len(data.classes))
    trainer = Trainer(
        model,
        spec,
        data,
        workdir,
        device=device,
        progress=progress,
        should_stop=should_stop,
        fraction_span=span,
        pick_on_val=pick_on_val,
    )
    fit = trainer.fit(resume=resume)
    return model.cpu().float().eval(), fit


def cross_validate(
    spec: JobSpec,
    data: Dataset,
    k: int,
    *,
    initial: Classifier | None = None,
    hflip: bool = False,
    workdir: Path | None = None,
    device: torch.device | None = None,
    progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    span: tuple[float, float] = (0.0, 1.0),
    resume: bool = False,
) -> CrossValidation:
    """Train one model per fold of the pooled data; each fold monitors on its held-out part.

    Every fold starts from a copy of `initial` (default: `build_model`). Out-of-fold logits
    are each fold model's, mirrored view averaged in when `hflip`, as the exported graph
    will. The held-out fold only watches: each fold model runs the whole schedule and keeps
    its last weights, so no out-of-fold scan helped pick the model that scores it (picking
    the best epoch on a 222-scan fold also cost AUC in nested CV: docs/benchmarks.md).
    """
    pool = pooled(data)
    folds = deal(pool.labels, pool.groups, k, spec.seed)  # whole patients where named
    oof = np.zeros((len(pool.labels), len(data.classes)), dtype=np.float32)
    mean, std = input_stats(spec)
    runs = []
    with tempfile.TemporaryDirectory(prefix="scantune-cv-") as tmp:
        root = workdir or Path(tmp)
        for fold in range(k):
            held = np.flatnonzero(folds == fold)
            fold_data = with_splits(
                data, subset(pool, np.flatnonzero(folds != fold)), subset(pool, held)
            )
            low, high = span
            fold_span = (low + (high - low) * fold / k, low + (high - low) * (fold + 1) / k)
            model, fit = train_split(
                spec,
                fold_data,
                root / f"fold{fold}",
                model=copy.deepcopy(initial) if initial is not None else None,
                device=device,
                progress=_numbered(progress, fold, k),
                should_stop=should_stop,
                span=fold_span,
                resume=resume,
                pick_on_val=False,
            )
            scorer = Ensemble([model], hflip=hflip)
            oof[held] = predict_logits(scorer, pool.images[held], mean, std, torch.device("cpu"))
            runs.append(FoldRun(model, fit, held, oof[held]))
    return CrossValidation(runs, pool.labels, oof)
