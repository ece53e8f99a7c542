"""How a published version does on the scans it classified in service: figures from the
confirmed diagnoses clients report (what the model said, and what the truth turned out to be),
beside what its card claimed on validation.

A card's figures come from a validation split of the training data; a hospital's scanners,
population and prevalence differ, and no held-out split sees that. The reports are the only
measure of a model where it is used (post-market surveillance). The decision is the card's:
its threshold on P(positive) for a binary model, else the most probable class. Binary
models get AUC with a bootstrap interval (`models.estimates`), and sensitivity and
specificity as shares with Wilson intervals; every model gets accuracy with its Wilson
interval and the confusion matrix. A figure whose interval lies wholly below the card's
validation interval is named in `below_validation`. A trend groups the reports by week or
month (`trend_periods`), each period's figures the same shares (`period_figures`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np

from models.card import Estimate, ModelCard
from models.estimates import LEVEL, bootstrap

Z = 1.959963984540054  # the standard normal's 97.5th percentile: a 95% interval
Bucket = Literal["week", "month"]  # a trend's periods: UTC weeks from Monday, or months


def reported_figures(
    card: ModelCard, labels: Sequence[str], probabilities: Sequence[dict[str, float]]
) -> dict[str, Any]:
    """The figures of `labels` (the truth, one per scan) against the version's `probabilities`
    for the same scans; None where the reports cannot give one (none yet; AUC needs reports
    of both classes, sensitivity one of the positive class, specificity one of the other)."""
    classes, truth, scores, matrix = _decided(card, labels, probabilities)
    threshold = card.threshold if len(classes) == 2 else None
    figures: dict[str, Any] = {
        "reports": len(truth),
        "classes": classes,
        "by_label": {name: int((truth == i).sum()) for i, name in enumerate(classes)},
        "decision": "threshold" if threshold is not None else "argmax",
        "threshold": threshold.value if threshold is not None else None,
        "confusion_matrix": matrix.tolist(),
        "accuracy": _accuracy(int(np.trace(matrix)), len(truth)),
        "auc": None,
        "sensitivity": None,
        "specificity": None,
    }
    if threshold is not None and len(truth):
        positive = classes.index(threshold.positive_class)
        found = bootstrap(truth == positive, scores[:, positive], threshold.value, "reported")
        figures["auc"] = _or_none(found["auc"])
        figures.update(_rates(matrix, positive))
    validation = {
        k: v for k, v in card.estimates.items() if k in ("auc", "sensitivity", "specificity")
    }
    figures["validation"] = {k: v.model_dump(mode="json") for k, v in validation.items()}
    figures["below_validation"] = _below(figures, validation)
    return figures


def period_figures(
    card: ModelCard, labels: Sequence[str], probabilities: Sequence[dict[str, float]]
) -> dict[str, Any]:
    """The figures of one period's reports (a week's, a month's), for a trend: accuracy, and
    for a binary model sensitivity and specificity at the card's threshold, each a share with
    its Wilson interval (null where the period has no report of the class). No AUC: a week
    seldom has enough reports of both classes for one, and its bootstrap is the costly part."""
    classes, _, _, matrix = _decided(card, labels, probabilities)
    figures: dict[str, Any] = {
        "reports": len(labels),
        "accuracy": _accuracy(int(np.trace(matrix)), len(labels)),
        "sensitivity": None,
        "specificity": None,
    }
    if len(classes) == 2 and card.threshold is not None:
        figures.update(_rates(matrix, classes.index(card.threshold.positive_class)))
    figures["below_validation"] = _below(figures, card.estimates)
    return figures


def _decided(
    card: ModelCard, labels: Sequence[str], probabilities: Sequence[dict[str, float]]
) -> tuple[list[str], Any, Any, Any]:
    """The classes, the truth and scores as arrays, and the confusion matrix (rows true,
    columns decided) at the card's decision: its threshold on P(positive) for a binary model,
    else the most probable class."""
    classes = list(card.classes)
    index = {name: i for i, name in enumerate(classes)}
    truth = np.array([index[label] for label in labels], dtype=int)
    scores = np.array([[p[name] for name in classes] for p in probabilities], dtype=float)
    threshold = card.threshold if len(classes) == 2 else None
    if threshold is not None and len(truth):
        positive = index[threshold.positive_class]
        said_positive = scores[:, positive] >= threshold.value
        predicted = np.where(said_positive, positive, 1 - positive)
    else:
        predicted = scores.argmax(axis=1) if len(truth) else np.array([], dtype=int)
    matrix = np.zeros((len(classes), len(classes)), dtype=int)
    np.add.at(matrix, (truth, predicted), 1)
    return classes, truth, scores, matrix


def _rates(matrix: Any, positive: int) -> dict[str, dict[str, Any] | None]:
    """Sensitivity and specificity at the decision, each a share of one class's reports with
    its Wilson interval: a percentile bootstrap of a share gives 0 to 0 for two findings both
    missed, which would call a version worse than its card on two reports."""
    negative = 1 - positive
    return {
        "sensitivity": _accuracy(int(matrix[positive, positive]), int(matrix[positive].sum())),
        "specificity": _accuracy(int(matrix[negative, negative]), int(matrix[negative].sum())),
    }


def _below(figures: dict[str, Any], claimed: Mapping[str, Estimate]) -> list[str]:
    """The figures whose interval lies wholly below the card's validation interval."""
    return [
        name
        for name in ("auc", "sensitivity", "specificity")
        if name in claimed
        and figures.get(name) is not None
        and figures[name]["high"] < claimed[name].low
    ]


def _accuracy(correct: int, total: int) -> dict[str, Any] | None:
    """The share decided right (of all, or of one class's) with its Wilson score interval
    (sound for small counts and for shares near 0 or 1, where the normal approximation's is
    not)."""
    if total == 0:
        return None
    share = correct / total
    centre = (share + Z**2 / (2 * total)) / (1 + Z**2 / total)
    half = Z * math.sqrt(share * (1 - share) / total + Z**2 / (4 * total**2)) / (1 + Z**2 / total)
    interval = Estimate(
        value=share,
        low=max(0.0, centre - half),
        high=min(1.0, centre + half),
        level=LEVEL,
        images=total,
        source="reported",
    )
    return interval.model_dump(mode="json")


def _or_none(estimate: Estimate) -> dict[str, Any] | None:
    """An estimate the reports can give (none when they hold one class only)."""
    if any(math.isnan(x) for x in (estimate.value, estimate.low, estimate.high)):
        return None
    return estimate.model_dump(mode="json")


def trend_periods(
    card: ModelCard,
    labels: Sequence[str],
    probabilities: Sequence[dict[str, float]],
    times: Sequence[datetime],
    bucket: Bucket,
) -> list[dict[str, Any]]:
    """The reports grouped by the period they were made in (`times`), each period's figures
    (`period_figures`), oldest first; only periods with reports."""
    grouped: dict[datetime, list[int]] = {}
    for i, at in enumerate(times):
        grouped.setdefault(period_start(at, bucket), []).append(i)
    periods = []
    for start in sorted(grouped):
        rows = grouped[start]
        figures = period_figures(card, [labels[i] for i in rows], [probabilities[i] for i in rows])
        end = back(start, bucket, -1)
        periods.append({"start": start.isoformat(), "end": end.isoformat(), **figures})
    return periods


def mark_partial(
    periods: list[dict[str, Any]], since: datetime, until: datetime | None, now: datetime
) -> list[dict[str, Any]]:
    """Each period (`trend_periods`') with `partial`: whether the window leaves part of it
    out, so that its figures hold fewer reports than a whole period would: one that began
    before `since`, or ends after `until` or after `now` (the period under way). Worked out
    apart from the periods' figures, which are kept while their reports stay the same, since
    the period under way becomes whole without a new report."""
    stop = min(until, now) if until is not None else now
    return [
        {**p, "partial": datetime.fromisoformat(p["start"]) < since
         or datetime.fromisoformat(p["end"]) > stop}
        for p in periods
    ]  # fmt: skip


def period_start(at: datetime, bucket: Bucket) -> datetime:
    """The start of the UTC week (Monday) or month `at` falls in."""
    day = at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday()) if bucket == "week" else day.replace(day=1)


def back(start: datetime, bucket: Bucket, periods: int) -> datetime:
    """The period start `periods` before `start` (a period start; negative: after)."""
    if bucket == "week":
        return start - timedelta(weeks=periods)
    months = start.year * 12 + start.month - 1 - periods
    return start.replace(year=months // 12, month=months % 12 + 1)
