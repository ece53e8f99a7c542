"""A version's evaluation on the validation split, as JSON: what the plots and the dashboard
draw (confusion matrix at the card's threshold, ROC and calibration points, per-class figures).

Torch-free numpy; the runner writes it as `evaluation.json` next to the card.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models import evaluate
from models.card import DecisionThreshold

EVALUATION_FILE = "evaluation.json"
ROC_POINTS = 200
"""At most this many points per ROC curve (evenly thinned; the ends are kept)."""
CALIBRATION_BINS = 10


def predictions(probs: np.ndarray, classes: list[str], threshold: DecisionThreshold | None) -> Any:
    """Predicted class indices: P(positive) >= threshold for a binary task with a threshold
    (what inference reports), else the most probable class."""
    if threshold is None or len(classes) != 2:
        return probs.argmax(axis=1)
    positive = classes.index(threshold.positive_class)
    return np.where(probs[:, positive] >= threshold.value, positive, 1 - positive)


def decision_text(classes: list[str], threshold: DecisionThreshold | None) -> str:
    """How the predictions were made, in words a plot title or a table caption can show."""
    if threshold is None or len(classes) != 2:
        return "predicted class: the most probable one (argmax)"
    return f"at the card's threshold: {threshold.positive_class} when P >= {threshold.value:.3f}"


def build(
    y: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
    threshold: DecisionThreshold | None,
    *,
    best_epoch: int | None = None,
) -> dict[str, Any]:
    """The evaluation of calibrated validation probabilities `probs` against labels `y`."""
    pred = predictions(probs, classes, threshold)
    cm = evaluate.confusion_matrix(y, pred, len(classes))
    table = evaluate.per_class(cm)
    return {
        "split": "val",
        "images": len(y),
        "classes": list(classes),
        "decision": "threshold" if threshold is not None and len(classes) == 2 else "argmax",
        "decision_text": decision_text(classes, threshold),
        "threshold": threshold.model_dump(mode="json") if threshold is not None else None,
        "best_epoch": best_epoch,
        "accuracy": float((pred == y).mean()) if len(y) else None,
        "confusion_matrix": cm.tolist(),
        "per_class": {c: {k: float(v[i]) for k, v in table.items()} for i, c in enumerate(classes)},
        "roc": roc_points(y, probs, classes),
        "calibration": calibration_points(y, probs),
    }


def roc_points(y: np.ndarray, probs: np.ndarray, classes: list[str]) -> list[dict[str, Any]]:
    """One ROC curve per class (only the positive one for a binary task)."""
    shown = [len(classes) - 1] if len(classes) == 2 else range(len(classes))
    out = []
    for c in shown:
        truth = (y == c).astype(int)
        fpr, tpr, _ = evaluate.roc_curve(truth, probs[:, c])
        keep = _thin(len(fpr), ROC_POINTS)
        out.append(
            {
                "class": classes[c],
                "auc": _finite(evaluate.roc_auc_binary(truth, probs[:, c])),
                "fpr": [float(v) for v in fpr[keep]],
                "tpr": [float(v) for v in tpr[keep]],
            }
        )
    return out


def calibration_points(y: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Reliability diagram of the top-1 confidence: per equal-width bin, the mean confidence,
    the accuracy and the count (empty bins left out)."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, CALIBRATION_BINS - 1)
    bins = [
        {
            "confidence": float(conf[idx == b].mean()),
            "accuracy": float(correct[idx == b].mean()),
            "count": int((idx == b).sum()),
        }
        for b in range(CALIBRATION_BINS)
        if (idx == b).any()
    ]
    return {"bins": bins, "ece": float(evaluate.ece(y, probs, CALIBRATION_BINS))}


def from_card(classes: list[str], metrics: dict[str, Any], threshold: Any) -> dict[str, Any]:
    """What a card published before evaluation.json existed still tells: its argmax confusion
    matrix and per-class table; no ROC or calibration points."""
    cm = metrics.get("confusion_matrix")
    return {
        "split": "val",
        "images": int(np.sum(cm)) if cm else None,
        "classes": list(classes),
        "decision": "argmax",
        "decision_text": decision_text(classes, None) + " (recorded before thresholds were)",
        "threshold": threshold,
        "best_epoch": metrics.get("best_epoch"),
        "accuracy": metrics.get("val_accuracy"),
        "confusion_matrix": cm,
        "per_class": metrics.get("per_class"),
        "roc": [],
        "calibration": None,
    }


def _thin(n: int, most: int) -> np.ndarray:
    if n <= most:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, most).round().astype(int))


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
