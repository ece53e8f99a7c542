"""The budgeted search: `recipe.search` runs an Optuna study before the job's training.

Each trial draws a configuration with the TPE sampler (lr, weight decay, label smoothing,
augmentation strength, epochs from half to twice the spec's), trains it on `search.folds`
stratified folds of train + validation and is scored by the AUC of its pooled out-of-fold
predictions. After each fold the mean AUC so far is reported, and the median pruner stops
trials that trail the others. The study starts no trial after `budget_minutes`; a trial still
running then is stopped and counted as pruned. The job then trains the best configuration as
usual. Each trial is logged and sent as a progress event (the job's metrics show it).
"""

from __future__ import annotations

import copy
import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models import evaluate
from models.crossval import (
    fold_share,
    pooled,
    subset,
    train_split,
    with_splits,
)
from models.data import Dataset
from models.finetune import input_stats, planned_epochs
from models.network import Classifier
from models.progress import ProgressCallback, ProgressEvent, TrainingCancelled
from models.spec import AugmentSpec, JobSpec, SearchSpec
from models.splits import folds as deal
from models.trainer import predict_logits

log = logging.getLogger("scantune.search")


@dataclass
class SearchResult:
    spec: JobSpec
    """The job spec with the best configuration in it (and no search left to run)."""
    best: dict[str, Any]
    best_auc: float | None
    trials: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """What the card records about the search."""
        states = [t["state"] for t in self.trials]
        return {
            "trials": len(self.trials),
            "complete": states.count("COMPLETE"),
            "pruned": states.count("PRUNED"),
            "best": self.best,
            "best_oof_auc": self.best_auc,
        }


def configure(spec: JobSpec, params: dict[str, Any]) -> JobSpec:
    """`spec` with a trial's parameters applied; the search itself removed."""
    recipe = spec.recipe
    strength = float(params.get("augment_strength", 1.0))
    base = AugmentSpec()
    augment = recipe.augment.model_copy(
        update={
            "rotate_degrees": min(45.0, base.rotate_degrees * strength),
            "translate": min(0.3, base.translate * strength),
            "scale": (1 - (1 - base.scale[0]) * strength, 1 + (base.scale[1] - 1) * strength),
            "brightness": min(0.5, base.brightness * strength),
            "contrast": min(0.5, base.contrast * strength),
        }
    )
    updates: dict[str, Any] = {"search": None}
    if "augment_strength" in params:
        updates["augment"] = augment
    for name in ("lr", "weight_decay", "label_smoothing"):
        if name in params:
            updates[name] = float(params[name])
    new = spec.model_copy(update={"recipe": recipe.model_copy(update=updates)})
    if "epochs" in params:
        new = new.model_copy(update={"epochs": int(params["epochs"])})
    return new


def _suggest(trial: Any, epochs: int) -> dict[str, Any]:
    """One configuration; epochs range over half to twice the spec's own."""
    return {
        "lr": trial.suggest_float("lr", 3e-4, 1e-2, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        "label_smoothing": trial.suggest_float("label_smoothing", 0.0, 0.2),
        "augment_strength": trial.suggest_float("augment_strength", 0.0, 2.5),
        "epochs": trial.suggest_int("epochs", max(1, epochs // 2), max(2, 2 * epochs)),
    }


def run_search(
    spec: JobSpec,
    data: Dataset,
    initial: Classifier,
    *,
    progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    span: tuple[float, float] = (0.0, 1.0),
    device: torch.device | None = None,
) -> SearchResult:
    """Search within `spec.recipe.search`'s budget; the best configuration as a job spec."""
    import optuna

    search = spec.recipe.search
    if search is None:
        return SearchResult(spec, {}, None)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own log line per trial instead
    runner = _Study(spec, search, data, initial, progress, should_stop, span, device)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=spec.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2),
    )
    study.optimize(
        runner.objective,
        n_trials=search.max_trials,
        timeout=runner.budget_s,
        callbacks=[runner.report],
    )
    if runner.user_stop():
        raise TrainingCancelled("cancelled during the search")
    best_value = _best_value(study)
    if best_value is None:
        log.info("search: no trial finished within the budget; training the spec as given")
        return SearchResult(configure(spec, {}), {}, None, runner.trials)
    params = study.best_trial.params
    return SearchResult(configure(spec, params), params, best_value, runner.trials)


class _Study:
    """One search's trials: each trains its configuration fold by fold within the deadline."""

    def __init__(
        self,
        spec: JobSpec,
        search: SearchSpec,
        data: Dataset,
        initial: Classifier,
        progress: ProgressCallback | None,
        should_stop: Callable[[], bool] | None,
        span: tuple[float, float],
        device: torch.device | None,
    ) -> None:
        self.spec, self.data, self.initial, self.device = spec, data, initial, device
        self.k = search.folds
        self.progress, self.span = progress, span
        self.user_stop = should_stop or (lambda: False)
        self.budget_s = search.budget_minutes * 60
        self.deadline = time.monotonic() + self.budget_s
        self.pool = pooled(data)
        self.folds = deal(self.pool.labels, self.pool.groups, self.k, spec.seed)
        # trials range around the epochs the job would run on a fold's share of the scans
        self.epochs = planned_epochs(spec, fold_share(len(self.pool.labels), self.k))
        self.trials: list[dict[str, Any]] = []

    def over(self) -> bool:
        return self.user_stop() or time.monotonic() > self.deadline

    def objective(self, trial: Any) -> float:
        """Out-of-fold AUC of the trial's configuration; pruned when it trails or runs out."""
        import optuna

        trial_spec = configure(self.spec, _suggest(trial, self.epochs))
        oof = np.zeros((len(self.pool.labels), len(self.data.classes)), dtype=np.float32)
        aucs = []
        for fold in range(self.k):
            held = np.flatnonzero(self.folds == fold)
            oof[held] = self._fold_logits(trial_spec, fold, held)
            aucs.append(evaluate.roc_auc(self.pool.labels[held], evaluate.softmax(oof[held])))
            trial.report(float(np.mean(aucs)), step=fold)
            if trial.should_prune():
                raise optuna.TrialPruned(f"mean fold AUC {np.mean(aucs):.4f} after fold {fold + 1}")
        return evaluate.roc_auc(self.pool.labels, evaluate.softmax(oof))

    def _fold_logits(self, trial_spec: JobSpec, fold: int, held: np.ndarray) -> np.ndarray:
        import optuna

        kept = subset(self.pool, np.flatnonzero(self.folds != fold))
        fold_data = with_splits(self.data, kept, subset(self.pool, held))
        try:
            with tempfile.TemporaryDirectory(prefix="scantune-search-") as tmp:
                model, _ = train_split(
                    trial_spec,
                    fold_data,
                    Path(tmp),
                    model=copy.deepcopy(self.initial),
                    device=self.device,
                    should_stop=self.over,
                    pick_on_val=False,  # the held fold scores the trial: it may not pick too
                )
        except TrainingCancelled:
            if self.user_stop():
                raise
            raise optuna.TrialPruned("the search budget ran out") from None
        mean, std = input_stats(trial_spec)
        return predict_logits(model, self.pool.images[held], mean, std, torch.device("cpu"))

    def report(self, study: Any, trial: Any) -> None:
        """A log line and a progress event per finished, pruned or failed trial."""
        row = {"trial": trial.number + 1, "state": trial.state.name, "oof_auc": trial.value}
        self.trials.append(row | {"params": trial.params})
        best = _best_value(study)
        log.info(
            "search trial %d %s oof_auc=%s best=%s params=%s",
            row["trial"],
            row["state"],
            _fmt(trial.value),
            _fmt(best),
            trial.params,
        )
        if self.progress is None:
            return
        done = min(1.0, 1 - (self.deadline - time.monotonic()) / self.budget_s)
        metrics = {"search_trial": float(row["trial"])}
        if trial.value is not None:
            metrics["search_trial_oof_auc"] = float(trial.value)
        if best is not None:
            metrics["search_best_oof_auc"] = best
        fraction = self.span[0] + (self.span[1] - self.span[0]) * done
        self.progress(ProgressEvent("training", fraction, metrics=metrics))


def search_once(
    spec: JobSpec, record: Path, resume: bool, run: Callable[[], SearchResult]
) -> SearchResult:
    """`run()`'s result, saved to `record`; a resumed job reuses it instead of searching again."""
    if resume and record.exists():
        saved = json.loads(record.read_text())
        return SearchResult(
            configure(spec, saved["best"]), saved["best"], saved["best_oof_auc"], saved["trials"]
        )
    result = run()
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(result.summary() | {"trials": result.trials}))
    return result


def _best_value(study: Any) -> float | None:
    import optuna

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    return max(float(t.value) for t in done) if done else None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
