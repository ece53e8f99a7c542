"""The threshold rule: out-of-fold first, validation when big enough, else the prior's 0.5."""

from __future__ import annotations

import numpy as np

from models.spec import ThresholdSpec
from models.threshold import MIN_PER_CLASS, Scores, decide, prior_threshold


def _scores(n_per_class: int, shift: float, source: str, seed: int = 0) -> Scores:
    """P(positive) from two overlapping score distributions; the best cut sits at 0.5 + shift."""
    rng = np.random.default_rng(seed)
    neg = rng.normal(0.35 + shift, 0.1, n_per_class)
    pos = rng.normal(0.65 + shift, 0.1, n_per_class)
    truth = np.r_[np.zeros(n_per_class), np.ones(n_per_class)].astype(np.int64)
    return Scores(truth, np.clip(np.r_[neg, pos], 0, 1), source)  # type: ignore[arg-type]


TRAIN = np.r_[np.zeros(25), np.ones(75)].astype(np.int64)  # a 75 % positive training prior


def test_out_of_fold_wins_over_a_big_validation_split() -> None:
    oof = _scores(400, 0.2, "out_of_fold")
    val = _scores(100, -0.2, "validation")
    chosen = decide(ThresholdSpec(), "pneumonia", [oof, val], TRAIN, balanced_training=True)
    assert chosen.chosen_on == "out_of_fold" and chosen.chosen_on_images == 800
    assert abs(chosen.value - 0.7) < 0.05  # the out-of-fold cut, not the validation one (0.3)


def test_validation_is_used_when_it_holds_enough_of_each_class() -> None:
    val = _scores(MIN_PER_CLASS, -0.2, "validation")
    chosen = decide(ThresholdSpec(), "pneumonia", [val], TRAIN, balanced_training=True)
    assert chosen.chosen_on == "validation" and chosen.chosen_on_images == 2 * MIN_PER_CLASS
    assert abs(chosen.value - 0.3) < 0.07
    assert chosen.sensitivity is not None and chosen.sensitivity > 0.8


def test_a_small_validation_split_falls_back_to_the_prior_rule() -> None:
    val = _scores(MIN_PER_CLASS - 1, -0.2, "validation")
    balanced = decide(ThresholdSpec(), "pneumonia", [val], TRAIN, balanced_training=True)
    assert (balanced.chosen_on, balanced.chosen_on_images, balanced.value) == ("prior", 0, 0.5)
    raw = decide(ThresholdSpec(), "pneumonia", [val], TRAIN, balanced_training=False)
    assert raw.chosen_on == "prior" and raw.value == 0.75
    # the figures at the fallback threshold are still measured on the scans there are
    expected = float((val.score[val.truth == 1] >= 0.75).mean())
    assert raw.sensitivity == expected


def test_a_small_out_of_fold_set_is_not_trusted_either() -> None:
    oof = _scores(10, 0.2, "out_of_fold")
    chosen = decide(ThresholdSpec(), "pneumonia", [oof], TRAIN, balanced_training=True)
    assert chosen.chosen_on == "prior" and chosen.value == 0.5


def test_the_prior_threshold_is_the_balanced_posterior_one_half() -> None:
    """A model trained on prior pi reports p = pi L / (pi L + 1 - pi) for likelihood ratio L."""
    pi = prior_threshold(TRAIN, balanced_training=False)
    for ratio in (0.5, 0.99, 1.01, 3.0):
        p = pi * ratio / (pi * ratio + 1 - pi)
        assert (p >= pi) == (ratio >= 1.0)  # positive exactly when the balanced posterior >= 0.5


def test_target_rules_carry_their_target_into_the_card() -> None:
    val = _scores(200, 0.0, "validation")
    rule = ThresholdSpec(rule="sensitivity", target=0.9)
    chosen = decide(rule, "pneumonia", [val], TRAIN, balanced_training=True)
    assert chosen.rule == "sensitivity" and chosen.target == 0.9
    assert chosen.sensitivity is not None and chosen.sensitivity >= 0.9
