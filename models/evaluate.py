"""Validation metrics, temperature scaling and the binary operating point, in numpy.

No scikit-learn: each metric is a few lines and unit-tested against hand-computed values.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from models.card import DecisionThreshold


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """(k, k) counts; rows are true classes, columns predictions."""
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def per_class(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class from a confusion matrix."""
    tp = np.diag(cm).astype(np.float64)
    precision = _safe_div(tp, cm.sum(axis=0).astype(np.float64))
    recall = _safe_div(tp, cm.sum(axis=1).astype(np.float64))
    f1 = _safe_div(2 * precision * recall, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "support": cm.sum(axis=1)}


def balanced_accuracy(cm: np.ndarray) -> float:
    """Mean recall over the classes present in the labels."""
    present = cm.sum(axis=1) > 0
    return float(per_class(cm)["recall"][present].mean())


def roc_auc_binary(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic (ties count half)."""
    pos, neg = int((y == 1).sum()), int((y == 0).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = _average_ranks(score)
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    start = 0
    for end in range(1, len(x) + 1):
        if end == len(x) or sorted_x[end] != sorted_x[start]:
            ranks[order[start:end]] = (start + end + 1) / 2  # 1-based mean rank of the tie block
            start = end
    return ranks


def roc_auc(y: np.ndarray, probs: np.ndarray) -> float:
    """Binary AUC on P(class 1); for more classes the macro mean of one-vs-rest AUCs."""
    if probs.shape[1] == 2:
        return roc_auc_binary(y, probs[:, 1])
    aucs = [roc_auc_binary((y == c).astype(int), probs[:, c]) for c in range(probs.shape[1])]
    return float(np.nanmean(aucs))


def roc_curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FPR, TPR and thresholds, predicting positive when score >= threshold (descending)."""
    order = np.argsort(-score, kind="mergesort")
    s, positive = score[order], y[order] == 1
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # end of each tie block
    tps, fps = np.cumsum(positive)[last], np.cumsum(~positive)[last]
    pos, neg = max(int(positive.sum()), 1), max(int((~positive).sum()), 1)
    return np.r_[0.0, fps / neg], np.r_[0.0, tps / pos], np.r_[np.inf, s[last]]


def ece(y: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of the top-1 confidence over equal-width bins."""
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            total += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(total)


def nll(y: np.ndarray, logits: np.ndarray, temperature: float = 1.0) -> float:
    p = softmax(logits, temperature)
    return float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean())


def fit_temperature(
    y: np.ndarray, logits: np.ndarray, low: float = 0.05, high: float = 20.0
) -> float:
    """Temperature minimising validation NLL; golden-section search on 1/T, where NLL is convex."""
    a, b = 1.0 / high, 1.0 / low
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(80):
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        if nll(y, logits, 1.0 / c) < nll(y, logits, 1.0 / d):
            b = d
        else:
            a = c
    return float(2.0 / (a + b))


Rule = Literal["youden", "sensitivity", "specificity"]


def choose_threshold(
    y: np.ndarray, score: np.ndarray, rule: Rule, target: float | None, positive_class: str
) -> DecisionThreshold:
    """Operating point on P(positive): Youden's J, or the best one meeting a target."""
    fpr, tpr, thr = roc_curve(y, score)
    fpr, tpr, thr = fpr[1:], tpr[1:], thr[1:]  # drop the (0, 0) point at +inf
    if rule == "youden":
        i = int(np.argmax(np.round(tpr - fpr, 12)))  # ties: the higher threshold
    elif rule == "sensitivity":
        ok = np.flatnonzero(tpr >= (target or 0.95))
        i = int(ok[0]) if len(ok) else len(thr) - 1  # highest threshold reaching the target
    else:
        ok = np.flatnonzero(1 - fpr >= (target or 0.95))
        i = int(ok[-1]) if len(ok) else 0  # lowest threshold keeping specificity
    return DecisionThreshold(
        positive_class=positive_class,
        value=float(np.clip(thr[i], 0.0, 1.0)),
        rule=rule,
        target=target if rule != "youden" else None,
        sensitivity=float(tpr[i]),
        specificity=float(1 - fpr[i]),
    )


def classification_metrics(
    y: np.ndarray, logits: np.ndarray, classes: list[str], temperature: float = 1.0
) -> dict[str, Any]:
    """Validation metrics of logits; ECE before and after `temperature`."""
    probs = softmax(logits)
    pred = probs.argmax(axis=1)
    cm = confusion_matrix(y, pred, len(classes))
    pc = per_class(cm)
    return {
        "val_accuracy": float((pred == y).mean()),
        "val_balanced_accuracy": balanced_accuracy(cm),
        "val_auc": roc_auc(y, probs),
        "val_loss": nll(y, logits),
        "val_ece": ece(y, probs),
        "val_ece_calibrated": ece(y, softmax(logits, temperature)),
        "val_nll_calibrated": nll(y, logits, temperature),
        "per_class": {c: {k: float(v[i]) for k, v in pc.items()} for i, c in enumerate(classes)},
        "confusion_matrix": cm.tolist(),
    }
