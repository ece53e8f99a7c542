"""The transfer-learning recipe: model, phases, freezing, optimiser, schedule and loss.

Phase 1 trains the new head on a frozen backbone; later phases unfreeze the backbone from a
named group on, each earlier group at a lower learning rate (discriminative LR), each phase with
its own linear warm-up and cosine decay. Groups up to `freeze_until` never train, and their
BatchNorm layers stay in eval mode so their running statistics keep their ImageNet values.
The training loop itself is in `models.trainer`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.backbones import create_backbone, get_info
from models.network import Classifier, build_head
from models.spec import JobSpec, PhaseSpec

CLASSIFIER = "classifier"

DEFAULT_EPOCHS = 6
"""Epochs of a job that names none, before `recipe.schedule_steps` raises them for small sets."""
MAX_SIZED_EPOCHS = 500
PATIENCE_STEP_UNIT = 64
"""Optimizer steps one epoch of early-stopping patience stands for, at least (one epoch of
about 4,000 scans at batch 64): a shorter epoch counts as part of one."""


def build_model(
    spec: JobSpec,
    num_classes: int,
    *,
    weights_uri: str | None = None,
    cache_dir: Path | None = None,
    s3_endpoint_url: str | None = None,
) -> Classifier:
    """The backbone named by the spec with a new head; seeded, so the head starts the same."""
    torch.manual_seed(spec.seed)
    backbone = create_backbone(
        spec.base_model,
        pretrained=spec.pretrained,
        weights_uri=spec.weights_uri or weights_uri,
        in_chans=spec.recipe.channels,
        cache_dir=cache_dir,
        s3_endpoint_url=s3_endpoint_url,
    )
    head_spec = spec.recipe.head
    head = build_head(backbone.num_features, num_classes, head_spec.hidden, head_spec.dropout)
    return Classifier(backbone, head, per_scan_norm=spec.recipe.input_norm == "per_scan")


def input_stats(spec: JobSpec) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std the backbone was pretrained with, for the spec's channel count."""
    return get_info(spec.base_model).input_stats(spec.recipe.channels)


def plan_phases(spec: JobSpec) -> list[PhaseSpec]:
    """The spec's explicit phases, or: 1 head-only epoch, then fine-tune the upper 2/3."""
    recipe = spec.recipe
    if recipe.phases:
        return list(recipe.phases)
    head_only = PhaseSpec(epochs=1, unfreeze_from=None, lr=recipe.lr, lr_decay=1.0)
    epochs = spec.epochs
    if epochs is None:  # sizing needs the data; a silent default here would plan the wrong run
        raise ValueError("plan the phases of a sized spec: see sized_epochs")
    if epochs == 1:
        return [head_only]
    groups = get_info(spec.base_model).groups
    start = groups[len(groups) // 3]
    tune = PhaseSpec(epochs=epochs - 1, unfreeze_from=start, lr=recipe.lr, lr_decay=0.7)
    return [head_only, tune]


def planned_epochs(spec: JobSpec, n_train: int) -> int:
    """The spec's own epochs, else at least `DEFAULT_EPOCHS` and enough epochs for
    `recipe.schedule_steps` optimizer steps on `n_train` scans (at most 500)."""
    if spec.epochs is not None:
        return spec.epochs
    steps = spec.recipe.schedule_steps
    if steps is None or spec.recipe.phases:
        return DEFAULT_EPOCHS
    per_epoch = max(1, n_train // max(1, min(spec.recipe.batch_size, n_train)))
    return min(MAX_SIZED_EPOCHS, max(DEFAULT_EPOCHS, math.ceil(steps / per_epoch)))


def patience_epochs(patience: int, steps_per_epoch: int) -> int:
    """Epochs without improvement that stop a run: `patience` epochs of at least
    `PATIENCE_STEP_UNIT` steps each. A step-sized schedule gives a small set many short
    epochs (6 steps each for 444 scans); 3 of them are noise on the validation curve, not a
    plateau (in nested CV they stopped 67-epoch runs at epoch 10: docs/benchmarks.md)."""
    if patience <= 0:
        return 0
    steps = max(1, steps_per_epoch)
    return math.ceil(patience * max(steps, PATIENCE_STEP_UNIT) / steps)


def sized_epochs(spec: JobSpec, n_train: int) -> JobSpec:
    """The spec with `epochs` set as `planned_epochs` plans them for `n_train` scans."""
    return spec.model_copy(update={"epochs": planned_epochs(spec, n_train)})


def phase_at(phases: list[PhaseSpec], epoch: int) -> tuple[int, int]:
    """(phase index, first epoch of that phase) for a 0-based epoch."""
    start = 0
    for index, phase in enumerate(phases):
        if epoch < start + phase.epochs:
            return index, start
        start += phase.epochs
    raise ValueError(f"epoch {epoch} is past the last phase")


def trainable_groups(model: Classifier, phase: PhaseSpec, freeze_until: str | None) -> list[str]:
    """Groups that train in `phase`, in order; the classifier always does."""
    names = model.group_names
    _check_group(names, phase.unfreeze_from, "unfreeze_from")
    _check_group(names, freeze_until, "freeze_until")
    first = names.index(phase.unfreeze_from) if phase.unfreeze_from else len(names) - 1
    if freeze_until is not None:
        first = max(first, names.index(freeze_until) + 1)
    return names[min(first, len(names) - 1) :]


def _check_group(names: list[str], group: str | None, what: str) -> None:
    if group is not None and group not in names:
        raise ValueError(f"{what}: no layer group {group!r}; groups are {names}")


def set_trainable(model: Classifier, trainable: list[str]) -> None:
    """requires_grad only in trainable groups; frozen groups (and their BatchNorm) in eval."""
    model.train()
    for name, module in model.group_modules().items():
        on = name in trainable
        module.requires_grad_(on)
        if not on:
            module.eval()


def make_optimizer(
    model: Classifier, trainable: list[str], phase: PhaseSpec, weight_decay: float
) -> torch.optim.AdamW:
    """AdamW with per-group LRs decaying by `lr_decay` per group towards the stem.

    Biases and norm parameters get no weight decay.
    """
    modules = model.group_modules()
    param_groups = []
    for depth, name in enumerate(reversed(trainable)):
        lr = phase.lr * phase.lr_decay**depth
        params = [p for p in modules[name].parameters() if p.requires_grad]
        decayed = [p for p in params if p.ndim > 1]
        plain = [p for p in params if p.ndim <= 1]
        param_groups += [
            {"params": decayed, "lr": lr, "weight_decay": weight_decay, "group": name},
            {"params": plain, "lr": lr, "weight_decay": 0.0, "group": name},
        ]
    return torch.optim.AdamW([g for g in param_groups if g["params"]])


def make_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to each group's LR, then cosine decay to zero, stepped per batch."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """n / (k * n_c): each class contributes equally to the loss."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = len(labels) / (num_classes * np.maximum(counts, 1.0))
    return torch.tensor(weights, dtype=torch.float32)


def make_loss(spec: JobSpec, labels: np.ndarray, num_classes: int) -> nn.CrossEntropyLoss:
    recipe = spec.recipe
    weight = class_weights(labels, num_classes) if recipe.imbalance == "weighted_loss" else None
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=recipe.label_smoothing)


def epoch_order(labels: np.ndarray, balanced: bool, gen: torch.Generator) -> torch.Tensor:
    """Sample order for one epoch: a permutation, or class-balanced draws with replacement."""
    n = len(labels)
    if not balanced:
        return torch.randperm(n, generator=gen)
    counts = np.bincount(labels)
    weights = torch.tensor(1.0 / counts[labels], dtype=torch.float64)
    return torch.multinomial(weights, n, replacement=True, generator=gen)
