"""Progress reporting and cancellation, shared by the recipe and the runner (torch-free)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Phase = Literal["preparing_data", "training", "evaluating", "exporting"]


@dataclass(frozen=True)
class ProgressEvent:
    """One progress report; `fraction` is the share of the whole job done, 0..1."""

    phase: Phase
    fraction: float
    epoch: int | None = None
    epochs: int | None = None
    step: int | None = None
    steps: int | None = None
    loss: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ProgressCallback = Callable[[ProgressEvent], None]


class TrainingCancelled(RuntimeError):
    """`should_stop()` asked the run to stop; the last checkpoint allows resuming."""
