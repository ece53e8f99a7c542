"""The binary decision threshold, chosen where the evidence for it is strongest.

A threshold picked on a small validation split is mostly noise (a 78-scan split cost 4 points
of test accuracy in issue 21), so the rule falls back in order:

1. out-of-fold predictions, when cross-validation ran: every training scan, each scored by a
   model that did not see it;
2. the validation split, when it holds at least `MIN_PER_CLASS` scans of each class;
3. else no picking at all: 0.5 on the posterior corrected to the training class prior.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from models.card import DecisionThreshold
from models.evaluate import choose_threshold
from models.spec import ThresholdSpec

MIN_PER_CLASS = 50
"""Fewest scans of each class a threshold may be picked on (below it, the prior rule)."""


@dataclass(frozen=True)
class Scores:
    """P(positive) for scans with known truth (1 = positive), and where they come from."""

    truth: np.ndarray
    score: np.ndarray
    source: Literal["out_of_fold", "validation"]

    def big_enough(self) -> bool:
        positives = int(self.truth.sum())
        return min(positives, len(self.truth) - positives) >= MIN_PER_CLASS


def prior_threshold(train_truth: np.ndarray, balanced_training: bool) -> float:
    """0.5 on the posterior corrected to the training prior pi, on the model's own scale.

    A model trained on the raw prior already outputs that posterior: its threshold is 0.5.
    One trained with class-balanced loss or sampling outputs q = L / (L + 1) for likelihood
    ratio L; the posterior pi L / (pi L + 1 - pi) >= 0.5 exactly when q >= 1 - pi.
    (bench/quality.py measured this against 0.5 on balanced outputs: docs/benchmarks.md.)
    """
    if not balanced_training or len(train_truth) == 0:
        return 0.5
    return float(1.0 - np.mean(train_truth))


def decide(
    rule: ThresholdSpec,
    positive_class: str,
    candidates: list[Scores],
    train_truth: np.ndarray,
    balanced_training: bool,
) -> DecisionThreshold:
    """The operating point by the rule on the first candidate big enough, else the prior one.

    `candidates` go strongest first (out-of-fold, then validation).
    """
    for scores in candidates:
        if scores.big_enough():
            picked = choose_threshold(
                scores.truth, scores.score, rule.rule, rule.target, positive_class
            )
            return picked.model_copy(
                update={"chosen_on": scores.source, "chosen_on_images": len(scores.truth)}
            )
    value = prior_threshold(train_truth, balanced_training)
    measured = _rates(candidates[-1], value) if candidates else (None, None)
    return DecisionThreshold(
        positive_class=positive_class,
        value=value,
        rule=rule.rule,
        target=rule.target if rule.rule != "youden" else None,
        sensitivity=measured[0],
        specificity=measured[1],
        chosen_on="prior",
        chosen_on_images=0,
    )


def _rates(scores: Scores, value: float) -> tuple[float | None, float | None]:
    """Sensitivity and specificity at `value` (None for a class with no scans)."""
    predicted = scores.score >= value
    positive = scores.truth == 1
    sens = float(predicted[positive].mean()) if positive.any() else None
    spec = float((~predicted[~positive]).mean()) if (~positive).any() else None
    return sens, spec
