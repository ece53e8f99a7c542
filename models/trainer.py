"""The fine-tuning loop: epochs over phases, validation, checkpoints, early stopping, resume.

Batches are drawn from the prepared images held in one tensor (no DataLoader worker overhead),
augmented in torch, normalised with the card's mean/std and fed to the model. Every epoch
reseeds its own generator from (seed, epoch), so a resumed run draws exactly the batches and
augmentations an uninterrupted one would have.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from models import checkpoint, evaluate
from models.augment import augment, mixup, normalize
from models.data import Dataset
from models.finetune import (
    epoch_order,
    input_stats,
    make_loss,
    make_optimizer,
    make_scheduler,
    patience_epochs,
    phase_at,
    plan_phases,
    set_trainable,
    sized_epochs,
    trainable_groups,
)
from models.network import Classifier
from models.progress import ProgressCallback, ProgressEvent, TrainingCancelled
from models.spec import JobSpec
from models.threshold import MIN_PER_CLASS

LOWER_IS_BETTER = {"val_loss"}


@dataclass
class FitResult:
    history: list[dict[str, Any]]
    best_epoch: int
    best_value: float
    epochs_run: int
    seconds: float
    train_images_per_s: float


def predict_logits(
    model: torch.nn.Module,
    images: np.ndarray | torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: torch.device,
    batch_size: int = 256,
) -> np.ndarray:
    """Eval-mode logits of prepared [0, 1] images, normalised like the card says."""
    x_all = torch.as_tensor(images)
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(x_all), batch_size):
            x = normalize(x_all[start : start + batch_size].to(device), mean, std)
            out.append(model(x).float().cpu())
    return torch.cat(out).numpy()


def quick_metrics(y: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """The per-epoch validation figures the monitor can choose from."""
    probs = evaluate.softmax(logits)
    cm = evaluate.confusion_matrix(y, probs.argmax(axis=1), probs.shape[1])
    return {
        "val_loss": evaluate.nll(y, logits),
        "val_accuracy": float(np.trace(cm) / max(1, cm.sum())),
        "val_balanced_accuracy": evaluate.balanced_accuracy(cm),
        "val_auc": evaluate.roc_auc(y, probs),
    }


def _ema(model: torch.nn.Module, decay: float | None) -> AveragedModel | None:
    """torch's own EMA of parameters and buffers (BatchNorm statistics too), or None."""
    if decay is None:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _val_trusted(labels: np.ndarray) -> bool:
    """Enough validation scans of every class to stop early and pick an epoch on."""
    return bool(np.bincount(labels).min() >= MIN_PER_CLASS)


class Trainer:
    """Runs the recipe's phases on a prepared dataset, checkpointing into `checkpoint_dir`."""

    def __init__(
        self,
        model: Classifier,
        spec: JobSpec,
        data: Dataset,
        checkpoint_dir: Path,
        *,
        device: torch.device | None = None,
        progress: ProgressCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
        fraction_span: tuple[float, float] = (0.0, 1.0),
        pick_on_val: bool = True,
    ) -> None:
        spec = sized_epochs(spec, len(data.train.labels))
        self.spec, self.recipe = spec, spec.recipe
        self.device = device or torch.device("cpu")
        self.model = model.to(self.device)
        self.phases = plan_phases(spec)
        self.epochs = sum(p.epochs for p in self.phases)
        self.mean, self.std = input_stats(spec)
        self.train_x = torch.from_numpy(data.train.images)
        self.train_y = torch.from_numpy(data.train.labels)
        self.val_x, self.val_y = data.val.images, data.val.labels
        self.loss_fn = make_loss(spec, data.train.labels, len(data.classes)).to(self.device)
        self.batch = min(self.recipe.batch_size, len(self.train_y))
        self.steps = len(self.train_y) // self.batch  # drop the ragged last batch
        self.dir = checkpoint_dir
        self.progress, self.should_stop, self.span = progress, should_stop, fraction_span
        self.amp = self.device.type == "cuda" and self.recipe.amp
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.epoch, self.phase_index, self.bad_epochs = 0, -1, 0
        self.history: list[dict[str, Any]] = []
        self.best_value, self.best_epoch = float("nan"), 0
        # stop early and keep the best epoch only on a split that may judge; a fold model's
        # held-out fold may not (`pick_on_val=False`): its out-of-fold scores must stay unseen
        trusted = self.recipe.small_val == "select_best" or _val_trusted(self.val_y)
        self.select = pick_on_val and trusted
        patience = self.recipe.early_stopping_patience if self.select else 0
        self.patience = patience_epochs(patience, self.steps)  # 0: never stop early
        if self.device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)
        self.ema = _ema(self.model, self.recipe.ema_decay)

    # --- the loop -----------------------------------------------------------------------

    def fit(self, resume: bool = False) -> FitResult:
        if resume and (self.dir / checkpoint.LAST).exists():
            self._restore(checkpoint.load(self.dir / checkpoint.LAST))
        while self.epoch < self.epochs and not self._patience_spent():
            self._enter_phase()
            record = self._run_epoch()
            self._finish_epoch(record)
        self.model.load_state_dict(checkpoint.load(self.dir / checkpoint.BEST)["model"])
        return self._result()

    def _enter_phase(self) -> None:
        index, _ = phase_at(self.phases, self.epoch)
        phase = self.phases[index]
        self.trainable = trainable_groups(self.model, phase, self.recipe.freeze_until)
        set_trainable(self.model, self.trainable)  # before the optimiser picks requires_grad
        if index != self.phase_index:
            self._new_optimizer(index)

    def _new_optimizer(self, index: int) -> None:
        phase = self.phases[index]
        self.optimizer = make_optimizer(self.model, self.trainable, phase, self.recipe.weight_decay)
        warmup = round(self.recipe.warmup_epochs * self.steps)
        self.scheduler = make_scheduler(self.optimizer, phase.epochs * self.steps, warmup)
        self.phase_index = index

    def _run_epoch(self) -> dict[str, Any]:
        seed = self.spec.seed * 1_000_003 + self.epoch
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed + 1)  # dropout
        order = epoch_order(self.train_y.numpy(), self.recipe.imbalance == "balanced_sampler", gen)
        start, losses = time.perf_counter(), []
        for step in range(self.steps):
            if self.should_stop is not None and self.should_stop():
                raise TrainingCancelled(f"cancelled in epoch {self.epoch + 1}, step {step + 1}")
            idx = order[step * self.batch : (step + 1) * self.batch]
            losses.append(self._step(self.train_x[idx], self.train_y[idx], gen))
            self._report_step(step, losses[-1])
        seconds = time.perf_counter() - start
        record = {
            "epoch": self.epoch + 1,
            "phase": self.phase_index + 1,
            "train_loss": float(np.mean(losses)),
        }
        record |= {"lr": self.optimizer.param_groups[0]["lr"], "train_seconds": seconds}
        record["train_images_per_s"] = self.steps * self.batch / max(seconds, 1e-9)
        logits = predict_logits(self._judged(), self.val_x, self.mean, self.std, self.device)
        return record | quick_metrics(self.val_y, logits)

    def _step(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> float:
        x = augment(x.to(self.device, non_blocking=True), self.recipe.augment, gen)
        y = y.to(self.device)
        partner, lam = None, 1.0
        if self.recipe.mixup_alpha:
            x, partner, lam = mixup(x, self.recipe.mixup_alpha, gen)
        x = normalize(x, self.mean, self.std)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            logits = self.model(x)
            loss = self.loss_fn(logits, y)
            if partner is not None:
                loss = lam * loss + (1.0 - lam) * self.loss_fn(logits, y[partner])
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return float(loss.detach())

    def _judged(self) -> torch.nn.Module:
        """The weights validated, selected and exported: the running average when kept."""
        return self.model if self.ema is None else self.ema.module

    # --- bookkeeping --------------------------------------------------------------------

    def _improved(self, value: float) -> bool:
        if np.isnan(self.best_value):
            return not np.isnan(value)
        if self.recipe.monitor in LOWER_IS_BETTER:
            return value < self.best_value
        return value > self.best_value

    def _patience_spent(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience

    def _finish_epoch(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        value = float(record[self.recipe.monitor])
        if self._improved(value) or self.best_epoch == 0 or not self.select:
            self.best_value, self.best_epoch, self.bad_epochs = value, self.epoch + 1, 0
            checkpoint.save(
                {"model": self._judged().state_dict(), "epoch": self.epoch + 1},
                self.dir / checkpoint.BEST,
            )
        else:
            self.bad_epochs += 1
        self.epoch += 1
        checkpoint.save(self._state(), self.dir / checkpoint.LAST)
        metrics = {k: v for k, v in record.items() if k.startswith("val_")}
        self._emit(self.steps, record["train_loss"], metrics)

    def _state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "phase_index": self.phase_index,
            "history": self.history,
            "best": {
                "value": self.best_value,
                "epoch": self.best_epoch,
                "bad_epochs": self.bad_epochs,
            },
            "rng": checkpoint.rng_state(),
            "spec": self.spec.model_dump_json(),
            "ema": None if self.ema is None else self.ema.state_dict(),
        }

    def _restore(self, state: dict[str, Any]) -> None:
        if state.get("spec") != self.spec.model_dump_json():
            raise ValueError(f"{self.dir / checkpoint.LAST} was written for another job spec")
        self.model.load_state_dict(state["model"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.epoch, self.history = int(state["epoch"]), list(state["history"])
        best = state["best"]
        self.best_value, self.best_epoch = float(best["value"]), int(best["epoch"])
        self.bad_epochs = int(best["bad_epochs"])
        checkpoint.set_rng_state(state["rng"])
        if self.epoch >= self.epochs:
            return
        self._enter_phase()
        if self.phase_index == state["phase_index"]:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])

    def _result(self) -> FitResult:
        seconds = sum(r["train_seconds"] for r in self.history)
        images = len(self.history) * self.steps * self.batch
        return FitResult(
            history=self.history,
            best_epoch=self.best_epoch,
            best_value=self.best_value,
            epochs_run=len(self.history),
            seconds=seconds,
            train_images_per_s=images / max(seconds, 1e-9),
        )

    # --- progress -----------------------------------------------------------------------

    def _report_step(self, step: int, loss: float) -> None:
        if self.progress is not None:
            self._emit(step + 1, loss, {})

    def _emit(self, step: int, loss: float, metrics: dict[str, float]) -> None:
        if self.progress is None:
            return
        done = (self.epoch + step / self.steps) if metrics == {} else self.epoch
        low, high = self.span
        fraction = low + (high - low) * min(1.0, done / self.epochs)
        epoch = self.epoch + (0 if metrics else 1)
        self.progress(
            ProgressEvent("training", fraction, epoch, self.epochs, step, self.steps, loss, metrics)
        )
