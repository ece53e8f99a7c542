"""The promotion gate: move an alias to a new version only when its metrics earn it."""

from __future__ import annotations

from typing import Any

from models.card import ModelCard
from models.caveats import card_caveats
from models.comparison import same_scans
from models.promote import AT_MOST, PromoteSpec, card_figure
from service.errors import NotFound
from service.registry import Registry


def metric_value(metrics: dict[str, Any], name: str) -> float | None:
    """`name` from a card's metrics: flat (`val_auc`) or nested under a split (`val.auc`)."""
    candidates: list[Any] = [metrics.get(name)]
    for split in ("val", "validation"):
        if name.startswith(f"{split}_") and isinstance(metrics.get(split), dict):
            candidates.append(metrics[split].get(name[len(split) + 1 :]))
    if not name.startswith("val_"):
        candidates.append(metrics.get(f"val_{name}"))
    for value in candidates:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def lower_is_better(name: str) -> bool:
    """A loss or calibration error (a gate's `max` figures), by its card name or without `val_`."""
    return card_figure(name) in AT_MOST


def decide(
    gate: PromoteSpec, card: ModelCard, current: ModelCard | None, *, monitor: str
) -> dict[str, Any]:
    """The decision as recorded on the job: {alias, passed, reason, figures}."""
    figures: dict[str, Any] = {}
    failures: list[str] = []
    bounds = [(n, v, "min") for n, v in gate.min.items()] + [
        (n, v, "max") for n, v in gate.max.items()
    ]
    for name, bound, side in bounds:
        value = metric_value(card.metrics, name)
        figures[name] = {"value": value, side: bound}
        if value is None:
            failures.append(f"{name} is not among the model's metrics")
        elif value < bound if side == "min" else value > bound:
            limit = "below the minimum" if side == "min" else "above the maximum"
            failures.append(f"{name} {value:.4f} is {limit} {bound:g}")
    for name, minimum in gate.min_lower.items():
        estimate = card.estimates.get(name)
        figures[f"{name}_lower"] = {"value": estimate.low if estimate else None, "min": minimum}
        if estimate is None:
            failures.append(f"the card records no interval of {name}")
        elif estimate.low < minimum:
            failures.append(
                f"{name}'s 95% interval reaches down to {estimate.low:.4f}, below the minimum"
                f" {minimum:g} (on {estimate.images} scans)"
            )
    if gate.refuse:
        found = dict(card_caveats(card))
        figures["caveats"] = sorted(found)
        failures.extend(f"caveat {code}: {found[code]}" for code in gate.refuse if code in found)
    if gate.beat_current and current is not None:
        figures["current_version"] = current.version
        # beaten on the same held-out scans, or on others: a pipeline weighs the two apart
        figures["same_scans"], figures["measured"] = same_scans(card, current)
        for name in [*gate.min, *gate.max] or [monitor]:
            new = metric_value(card.metrics, name)
            old = metric_value(current.metrics, name)
            entry = figures.setdefault(name, {"value": new})
            entry["current"] = old
            if new is None or old is None:
                continue  # a missing figure is already a failure above, or nothing to beat
            better = new < old if lower_is_better(name) else new > old
            if not better:
                failures.append(
                    f"{name} {new:.4f} does not beat version {current.version}'s {old:.4f}"
                )
    passed = not failures
    if passed:
        reason = "gate passed" + (
            f"; {gate.alias} had no version" if gate.beat_current and current is None else ""
        )
    else:
        reason = "; ".join(failures)
    return {"alias": gate.alias, "passed": passed, "reason": reason, "figures": figures}


def apply_gate(
    registry: Registry,
    gate: PromoteSpec,
    card: ModelCard,
    *,
    monitor: str,
    actor: str,
) -> dict[str, Any]:
    """Decide, and move the alias to `card`'s version when the gate passes."""
    name, version = card.name, card.version
    if version is None:
        raise ValueError("only a published card (with a version) can be promoted")
    try:
        current_version = registry.get_alias(name, gate.alias).version
        current: ModelCard | None = registry.get_card(name, current_version)
    except NotFound:
        current = None
    decision = decide(gate, card, current, monitor=monitor)
    if decision["passed"]:
        registry.set_alias(name, gate.alias, version, actor=actor)
        decision["version"] = version
    return decision
