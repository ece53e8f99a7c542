"""Bootstrap confidence intervals for the card's AUC, sensitivity and specificity."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.estimates import bootstrap
from models.evaluate import roc_auc_binary


def _binormal(n: int, separation: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.random(n) < 0.4
    score = rng.normal(0.0, 1.0, n) + separation * truth
    return truth.astype(np.int64), score


def test_point_values_are_the_plain_figures() -> None:
    truth, score = _binormal(300, 1.5, seed=1)
    est = bootstrap(truth, score, 0.75, "validation", resamples=200)
    assert abs(est["auc"].value - roc_auc_binary(truth, score)) < 1e-12
    assert est["sensitivity"].value == float((score[truth == 1] >= 0.75).mean())
    assert est["specificity"].value == float((score[truth == 0] < 0.75).mean())
    for e in est.values():
        assert e.low <= e.value <= e.high and e.images == 300 and e.source == "validation"


def test_intervals_cover_the_true_auc_and_narrow_with_more_scans() -> None:
    separation = 1.2
    true_auc = 0.5 * (1 + math.erf(separation / 2))  # binormal AUC: Phi(d / sqrt 2)
    widths = []
    for n in (200, 3200):
        truth, score = _binormal(n, separation, seed=n)
        auc = bootstrap(truth, score, 0.6, "out_of_fold")["auc"]
        assert auc.low < true_auc < auc.high
        widths.append(auc.high - auc.low)
    assert widths[1] < widths[0] / 2.5  # about 1/sqrt(16) = 1/4 of the width


def test_a_perfect_separation_has_no_spread() -> None:
    truth = np.r_[np.zeros(50), np.ones(50)].astype(np.int64)
    score = np.r_[np.linspace(0, 0.4, 50), np.linspace(0.6, 1, 50)]
    est = bootstrap(truth, score, 0.5, "validation", resamples=100)
    assert (est["auc"].low, est["auc"].high) == (1.0, 1.0)
    assert est["sensitivity"].low == 1.0 and est["specificity"].high == 1.0


def test_ties_count_half_like_the_plain_auc() -> None:
    truth = np.array([0, 0, 1, 1, 0, 1])
    score = np.array([0.2, 0.5, 0.5, 0.9, 0.5, 0.1])
    est = bootstrap(truth, score, 0.5, "validation", resamples=50)
    assert abs(est["auc"].value - roc_auc_binary(truth, score)) < 1e-12


def test_a_large_set_is_resampled_in_cells_to_the_same_intervals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from models import estimates

    truth, score = _binormal(8000, 1.0, seed=3)
    cells = bootstrap(truth, score, 0.5, "out_of_fold")  # above EXACT_UP_TO: in cells
    monkeypatch.setattr(estimates, "EXACT_UP_TO", 10**9)
    one_by_one = bootstrap(truth, score, 0.5, "out_of_fold")
    for name in ("auc", "sensitivity", "specificity"):
        assert cells[name].value == one_by_one[name].value  # the point figures are exact
        assert abs(cells[name].low - one_by_one[name].low) < 0.003, name
        assert abs(cells[name].high - one_by_one[name].high) < 0.003, name
