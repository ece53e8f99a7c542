"""Two versions of a model side by side: what the people deciding whether a candidate takes
`production` ask first. Is it better, by how much, measured on what, and what changed?

Each figure is its card's own, measured on its job's validation (or out-of-fold) scans. Two
jobs on the same data, with the same split and seed, held out the same scans; otherwise their
figures come from different scans, and a difference smaller than the intervals is not evidence.
`same_scans` says which, with the reason, and each interval is given beside the other.
"""

from __future__ import annotations

from typing import Any

from models.card import ModelCard
from models.promote import AT_LEAST, AT_MOST

# Settings that decide which scans a job held out, besides the data itself (recipe keys).
SPLIT_SETTINGS = ("seed", "cv_folds")


def compare(card: ModelCard, against: ModelCard) -> dict[str, Any]:
    """`card` against `against`: figures with their differences, intervals, thresholds, and
    the settings that differ. Version numbers and caveats are the caller's to add."""
    held_out, why = same_scans(card, against)
    return {
        "same_scans": held_out,
        "measured": why,
        "figures": _figures(card.metrics, against.metrics),
        "intervals": _intervals(card, against),
        "threshold": {
            "version": card.threshold and card.threshold.model_dump(mode="json"),
            "against": against.threshold and against.threshold.model_dump(mode="json"),
        },
        "changes": changes(card, against),
    }


def same_scans(card: ModelCard, against: ModelCard) -> tuple[bool, str]:
    """Whether both versions' figures were measured on the same held-out scans, and why."""
    if card.dataset.sha256 != against.dataset.sha256:
        return (
            False,
            "trained on other data (another dataset file): the figures come from other scans",
        )
    if card.metrics.get("estimated_on") != against.metrics.get("estimated_on"):
        return False, "one measured out of fold, the other on a validation split: other scans"
    if card.dataset.class_counts != against.dataset.class_counts:
        return False, "the same data, split otherwise (other class counts): other scans"
    split = [k for k in SPLIT_SETTINGS if card.recipe.get(k) != against.recipe.get(k)]
    if split:
        return False, f"the same data, split with another {' and '.join(split)}: other scans"
    return True, "the same data, split alike: both measured on the same held-out scans"


def _figures(metrics: dict[str, Any], other: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for name in AT_LEAST + AT_MOST:
        a, b = _number(metrics.get(name)), _number(other.get(name))
        if a is None and b is None:
            continue
        found.append(
            {
                "name": name,
                "better": "higher" if name in AT_LEAST else "lower",
                "version": a,
                "against": b,
                "difference": None if a is None or b is None else a - b,
            }
        )
    return found


def _intervals(card: ModelCard, against: ModelCard) -> list[dict[str, Any]]:
    found = []
    for name in sorted(set(card.estimates) | set(against.estimates)):
        a, b = card.estimates.get(name), against.estimates.get(name)
        overlap = None if a is None or b is None else a.low <= b.high and b.low <= a.high
        found.append(
            {
                "name": name,
                "version": a and a.model_dump(mode="json"),
                "against": b and b.model_dump(mode="json"),
                "overlap": overlap,
            }
        )
    return found


def changes(card: ModelCard, against: ModelCard) -> list[dict[str, Any]]:
    """Each setting of the two cards that differs (dotted names), the data's first."""
    mine, theirs = _settings(card), _settings(against)
    return [
        {"setting": key, "version": mine.get(key), "against": theirs.get(key)}
        for key in sorted(set(mine) | set(theirs), key=lambda k: (not k.startswith("dataset"), k))
        if mine.get(key) != theirs.get(key)
    ]


def _settings(card: ModelCard) -> dict[str, Any]:
    flat: dict[str, Any] = {
        "base_model": card.base_model,
        "classes": list(card.classes),
        "input.size": card.input.size,
        "input.channels": card.input.channels,
        "dataset.uri": card.dataset.uri,
        "dataset.sha256": card.dataset.sha256,
        "dataset.split_by": card.dataset.split_by,
        "training.epochs_run": card.training.epochs_run,
        "training.device": card.training.device,
    }
    for split, counts in card.dataset.class_counts.items():
        flat[f"dataset.{split}_scans"] = sum(counts.values())
    _flatten("recipe", card.recipe, flat)
    return flat


def _flatten(prefix: str, value: Any, into: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}", inner, into)
    else:  # lists (the recipe's phases) compare whole
        into[prefix] = value


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
