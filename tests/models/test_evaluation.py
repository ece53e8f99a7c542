"""evaluation.json and the plots agree with the card: the matrix at its threshold, saying so,
and the curves marking the best epoch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models import evaluation, plots
from models.card import DecisionThreshold
from models.data import Dataset, Split

Y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1])
P1 = np.array([0.05, 0.2, 0.45, 0.6, 0.3, 0.4, 0.55, 0.8, 0.95])
PROBS = np.c_[1 - P1, P1]
CLASSES = ["normal", "pneumonia"]


def test_the_matrix_is_at_the_threshold_not_argmax() -> None:
    low = DecisionThreshold(positive_class="pneumonia", value=0.35)
    result = evaluation.build(Y, PROBS, CLASSES, low, best_epoch=2)
    # P >= 0.35: normals 0.45 and 0.6 are called pneumonia; only 0.3 of the pneumonias is missed
    assert result["confusion_matrix"] == [[2, 2], [1, 4]]
    assert result["decision"] == "threshold" and "P >= 0.350" in result["decision_text"]
    assert result["accuracy"] == pytest.approx(6 / 9)
    assert result["per_class"]["pneumonia"]["recall"] == pytest.approx(0.8)
    argmax = evaluation.build(Y, PROBS, CLASSES, None)
    assert argmax["confusion_matrix"] == [[3, 1], [2, 3]] and argmax["decision"] == "argmax"
    assert result["best_epoch"] == 2 and result["images"] == 9


def test_roc_and_calibration_points() -> None:
    result = evaluation.build(Y, PROBS, CLASSES, None)
    (roc,) = result["roc"]
    assert roc["class"] == "pneumonia"
    assert roc["fpr"][0] == 0.0 and roc["tpr"][-1] == 1.0 and roc["fpr"][-1] == 1.0
    assert roc["fpr"] == sorted(roc["fpr"]) and roc["tpr"] == sorted(roc["tpr"])
    assert roc["auc"] == pytest.approx(15 / 20)  # pairs ranked right: 15 of 4 x 5
    bins = result["calibration"]["bins"]
    assert sum(b["count"] for b in bins) == 9
    assert all(0.5 <= b["confidence"] <= 1 and 0 <= b["accuracy"] <= 1 for b in bins)


def test_long_roc_curves_are_thinned_keeping_their_ends() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 5000)
    p = np.clip(y * 0.3 + rng.random(5000) * 0.7, 0, 1)
    (roc,) = evaluation.roc_points(y, np.c_[1 - p, p], CLASSES)
    assert len(roc["fpr"]) <= evaluation.ROC_POINTS
    assert roc["fpr"][0] == 0.0 and roc["tpr"][-1] == 1.0


def test_the_plots_say_what_they_show(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib.axes

    titles: list[str] = []
    lines: list[str] = []
    real_title, real_vline = matplotlib.axes.Axes.set_title, matplotlib.axes.Axes.axvline
    monkeypatch.setattr(
        matplotlib.axes.Axes,
        "set_title",
        lambda ax, t, **kw: titles.append(t) or real_title(ax, t, **kw),
    )
    monkeypatch.setattr(
        matplotlib.axes.Axes,
        "axvline",
        lambda ax, x, **kw: lines.append(kw.get("label", "")) or real_vline(ax, x, **kw),
    )
    split = Split(np.zeros((9, 1, 4, 4), np.float32), Y, [str(i) for i in range(9)])
    data = Dataset(CLASSES, split, split, "mem://", "npz", "0" * 64)
    history = [
        {"epoch": e, "train_loss": 0.5, "val_loss": 0.4, "val_accuracy": 0.8, "val_auc": 0.9,
         "val_balanced_accuracy": 0.8}
        for e in (1, 2, 3)
    ]  # fmt: skip
    threshold = DecisionThreshold(positive_class="pneumonia", value=0.35)
    logits = np.log(PROBS)
    written = plots.write_all(
        tmp_path, history, data, logits, 1.0, "val_auc", threshold=threshold, best_epoch=2
    )
    assert [p.name for p in written] == ["training_curves.png", "confusion_matrix.png", "roc.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in written)
    assert any("at the card's threshold" in t and "0.350" in t for t in titles), titles
    assert lines == ["best epoch (2)", "best epoch (2)"]
