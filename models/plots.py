"""PNG plots of a training run: curves, confusion matrix, ROC (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from models import evaluate
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
) -> list[Path]:
    """training_curves.png, confusion_matrix.png and roc.png under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    probs = evaluate.softmax(logits, temperature)
    y = data.val.labels
    return [
        training_curves(folder / "training_curves.png", history, monitor),
        confusion(folder / "confusion_matrix.png", y, probs.argmax(axis=1), data.classes),
        roc(folder / "roc.png", y, probs, data.classes),
    ]


def training_curves(path: Path, history: list[dict[str, Any]], monitor: str) -> Path:
    plt = _pyplot()
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], "o-", label="train loss")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], "o-", label="val loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.legend()
    for key in ("val_accuracy", "val_auc", "val_balanced_accuracy"):
        ax_metric.plot(epochs, [r[key] for r in history], "o-", label=key)
    ax_metric.set_xlabel("epoch")
    ax_metric.set_title(f"monitor: {monitor}")
    ax_metric.legend()
    return _save(fig, path)


def confusion(path: Path, y: np.ndarray, pred: np.ndarray, classes: list[str]) -> Path:
    plt = _pyplot()
    cm = evaluate.confusion_matrix(y, pred, len(classes))
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 3, 1.2 * len(classes) + 2.5))
    ax.imshow(cm, cmap="Blues")
    for (i, j), count in np.ndenumerate(cm):
        ax.text(j, i, str(count), ha="center", va="center")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
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
