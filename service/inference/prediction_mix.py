"""What a version answers in service, beside what its validation said it would answer.

Outcomes (`docs/quality.md`) say how a version does once the diagnoses are confirmed, weeks
later. The mix of classes it answers says at once that something changed: a new scanner, a
ward with another case mix, images unlike the training set. Each v1 answer counts its class
(`scantune_inference_predicted_total`) and its calibrated confidence; when a version loads,
its expected share of each class is set from its card (`scantune_model_expected_share`), and
the chart's alert `ScantunePredictionMixShifted` compares the two. No scan data: a model, a
version and a class name.

The expected share is the card's own: for a binary task with an operating point, sensitivity
and specificity at the threshold over the validation prevalence; else the columns of the
validation confusion matrix (argmax); a card with neither sets none.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from models.card import ModelCard
from service.inference import metrics


def expected_shares(card: ModelCard) -> dict[str, float] | None:
    """The share of scans the card's validation says each class is answered for."""
    threshold, counts = card.threshold, card.dataset.class_counts.get("val", {})
    total = sum(counts.get(c, 0) for c in card.classes)
    if threshold is not None and len(card.classes) == 2 and total:
        sensitivity, specificity = threshold.sensitivity, threshold.specificity
        if sensitivity is not None and specificity is not None:
            positive = threshold.positive_class
            prevalence = counts.get(positive, 0) / total
            share = sensitivity * prevalence + (1 - specificity) * (1 - prevalence)
            (negative,) = [c for c in card.classes if c != positive]
            return {positive: share, negative: 1 - share}
    matrix = card.metrics.get("confusion_matrix")
    if not (isinstance(matrix, list) and len(matrix) == len(card.classes)):
        return None
    answered = [sum(row[j] for row in matrix) for j in range(len(card.classes))]
    if not sum(answered):
        return None
    return {c: n / sum(answered) for c, n in zip(card.classes, answered, strict=True)}


def loaded(name: str, version: int, card: ModelCard) -> None:
    """Set the expected shares of a version as it loads."""
    for label, share in (expected_shares(card) or {}).items():
        metrics.EXPECTED_SHARE.labels(name, str(version), label).set(share)


def answered(name: str, version: int, predictions: Sequence[dict[str, Any]]) -> None:
    """Count the classes a request answered, and how sure each answer was."""
    for label, count in Counter(p["label"] for p in predictions).items():
        metrics.PREDICTED.labels(name, str(version), label).inc(count)
    confidence = metrics.CONFIDENCE.labels(name, str(version))
    for prediction in predictions:
        confidence.observe(prediction["probabilities"][prediction["label"]])
