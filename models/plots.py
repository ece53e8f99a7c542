"""PNG plots of a training run: curves, confusion matrix, ROC (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from models import evaluate, evaluation
from models.card import DecisionThreshold
from models.data import Dataset


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_all(
    folder: Path,
    history: list[dict[str, Any]],
    data: Dataset,
    logits: np.ndarray,
    temperature: float,
    monitor: str,
    *,
    threshold: DecisionThreshold | None = None,
    best_epoch: int | None = None,
) -> list[Path]:
    """training_curves.png (the best epoch marked), confusion_matrix.png (at the card's
    threshold when there is one, and saying so) and roc.png under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    probs = evaluate.softmax(logits, temperature)
    y = data.val.labels
    pred = evaluation.predictions(probs, data.classes, threshold)
    caption = evaluation.decision_text(data.classes, threshold)
    return [
        training_curves(folder / "training_curves.png", history, monitor, best_epoch),
        confusion(folder / "confusion_matrix.png", y, pred, data.classes, caption),
        roc(folder / "roc.png", y, probs, data.classes),
    ]


def training_curves(
    path: Path, history: list[dict[str, Any]], monitor: str, best_epoch: int | None = None
) -> Path:
    plt = _pyplot()
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], "o-", label="train loss")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], "o-", label="val loss")
    ax_loss.set_xlabel("epoch")
    for key in ("val_accuracy", "val_auc", "val_balanced_accuracy"):
        ax_metric.plot(epochs, [r[key] for r in history], "o-", label=key)
    ax_metric.set_xlabel("epoch")
    ax_metric.set_title(f"monitor: {monitor}")
    if best_epoch is not None:
        for ax in (ax_loss, ax_metric):
            ax.axvline(best_epoch, color="0.4", linestyle="--", label=f"best epoch ({best_epoch})")
    ax_loss.legend()
    ax_metric.legend()
    return _save(fig, path)


def confusion(
    path: Path, y: np.ndarray, pred: np.ndarray, classes: list[str], caption: str = ""
) -> Path:
    plt = _pyplot()
    cm = evaluate.confusion_matrix(y, pred, len(classes))
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 3.5, 1.2 * len(classes) + 2.5))
    ax.imshow(cm, cmap="Blues")
    for (i, j), count in np.ndenumerate(cm):
        ax.text(j, i, str(count), ha="center", va="center")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"validation, {caption}" if caption else "validation", fontsize=9, wrap=True)
    return _save(fig, path)


def roc(path: Path, y: np.ndarray, probs: np.ndarray, classes: list[str]) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    shown = [1] if len(classes) == 2 else range(len(classes))
    for c in shown:
        fpr, tpr, _ = evaluate.roc_curve((y == c).astype(int), probs[:, c])
        auc = evaluate.roc_auc_binary((y == c).astype(int), probs[:, c])
        ax.plot(fpr, tpr, label=f"{classes[c]} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(loc="lower right")
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path
