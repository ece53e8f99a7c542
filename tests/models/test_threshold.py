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
    assert (balanced.chosen_on, balanced.chosen_on_images, balanced.value) == ("prior", 0, 0.25)
    raw = decide(ThresholdSpec(), "pneumonia", [val], TRAIN, balanced_training=False)
    assert raw.chosen_on == "prior" and raw.value == 0.5
    # the figures at the fallback threshold are still measured on the scans there are
    expected = float((val.score[val.truth == 1] >= 0.25).mean())
    assert balanced.sensitivity == expected


def test_a_small_out_of_fold_set_is_not_trusted_either() -> None:
    oof = _scores(10, 0.2, "out_of_fold")
    chosen = decide(ThresholdSpec(), "pneumonia", [oof], TRAIN, balanced_training=False)
    assert chosen.chosen_on == "prior" and chosen.value == 0.5


def test_the_prior_threshold_is_one_half_of_the_prior_corrected_posterior() -> None:
    """A balanced model reports q = L / (L + 1) for likelihood ratio L; under the training
    prior pi the posterior is pi L / (pi L + 1 - pi)."""
    pi = float(TRAIN.mean())
    cut = prior_threshold(TRAIN, balanced_training=True)
    for ratio in (0.2, 1 / 3 - 1e-6, 1 / 3 + 1e-6, 1.0, 3.0):
        q = ratio / (ratio + 1)
        posterior = pi * ratio / (pi * ratio + 1 - pi)
        assert (q >= cut) == (posterior >= 0.5)
    assert prior_threshold(TRAIN, balanced_training=False) == 0.5


def test_target_rules_carry_their_target_into_the_card() -> None:
    val = _scores(200, 0.0, "validation")
    rule = ThresholdSpec(rule="sensitivity", target=0.9)
    chosen = decide(rule, "pneumonia", [val], TRAIN, balanced_training=True)
    assert chosen.rule == "sensitivity" and chosen.target == 0.9
    assert chosen.sensitivity is not None and chosen.sensitivity >= 0.9
