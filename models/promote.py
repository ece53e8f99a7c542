"""A job's promotion gate, as its spec gives it (`promote`): the card figures and caveats that
must hold before the job moves an alias to its version (`service.jobs.promotion` weighs them).
A bound the card could never meet is refused here, at submit, not found out after the training.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from models.card import ALIAS_PATTERN
from models.caveats import CardCaveat

# The card's figures a gate may bound (`models.evaluate` and `models.runner` write them under
# these names; a gate may also name them without `val_`): a score at least its `min`, a loss or
# calibration error at most its `max`. The first four and the ECEs lie in [0, 1].
AT_LEAST = ("val_auc", "val_accuracy", "val_balanced_accuracy", "val_accuracy_at_threshold")
AT_MOST = ("val_loss", "val_ece", "val_ece_calibrated", "val_nll_calibrated")
IN_UNIT_RANGE = (*AT_LEAST, "val_ece", "val_ece_calibrated")


def card_figure(name: str) -> str:
    """The card's name of a figure a gate names, with or without `val_` (`auc`: `val_auc`)."""
    return name if name.startswith("val_") else f"val_{name}"


def _bounded_figures(bounds: dict[str, float], kind: Literal["min", "max"]) -> dict[str, float]:
    """`bounds` when each names a figure the card records, bounded on the side that makes it
    better, by a value it can take: refused at submit, not found after the training."""
    allowed, other = (AT_LEAST, "max") if kind == "min" else (AT_MOST, "min")
    for name, bound in bounds.items():
        figure = card_figure(name)
        if figure not in allowed:
            if figure in AT_LEAST + AT_MOST:
                better = "lower" if kind == "min" else "higher"
                raise ValueError(f"{name} is better {better}: bound it in `{other}`")
            raise ValueError(
                f"{name} is not a figure the card records; `{kind}` takes {', '.join(allowed)}"
            )
        if figure in IN_UNIT_RANGE and not 0 <= bound <= 1:
            raise ValueError(
                f"{name} lies between 0 and 1 (a fraction, not a percentage): {bound:g}"
            )
        if bound < 0:
            raise ValueError(f"{name} is never negative: {bound:g}")
    return bounds


class PromoteSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alias: str = Field(pattern=ALIAS_PATTERN)
    min: dict[str, float] = Field(
        default_factory=dict,
        description=f"card figure -> its minimum: one of {', '.join(AT_LEAST)} (or without"
        " `val_`), a fraction in [0, 1]. val_accuracy_at_threshold: two classes only.",
    )
    max: dict[str, float] = Field(
        default_factory=dict,
        description=f"card figure -> its maximum: one of {', '.join(AT_MOST)} (or without"
        " `val_`), e.g. {val_ece_calibrated: 0.05} for a calibration a site relies on.",
    )
    min_lower: dict[Literal["auc", "sensitivity", "specificity"], float] = Field(
        default_factory=dict,
        description="figure -> minimum of the lower end of its 95% interval on the card (its"
        " estimates): a small validation split's point estimate clears a minimum its interval"
        " does not.",
    )
    refuse: list[CardCaveat] = Field(
        default_factory=list,
        max_length=5,
        description="the card's caveats that stop the promotion (codes of GET …/caveats), e.g."
        " few_scans or patients_in_both.",
    )
    beat_current: bool = False

    @field_validator("min")
    @classmethod
    def _minimums(cls, value: dict[str, float]) -> dict[str, float]:
        return _bounded_figures(value, "min")

    @field_validator("max")
    @classmethod
    def _maximums(cls, value: dict[str, float]) -> dict[str, float]:
        return _bounded_figures(value, "max")

    @field_validator("min_lower")
    @classmethod
    def _lower_ends(cls, value: dict[str, float]) -> dict[str, float]:
        for name, bound in value.items():
            if not 0 <= bound <= 1:
                raise ValueError(f"{name} lies between 0 and 1: {bound:g}")
        return value
