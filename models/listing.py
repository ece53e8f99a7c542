"""What a dataset format reader finds (`models.data` and `models.npz`): the labelled items of
each split, not decoded yet, and every problem met, reported together as one `DataError`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAX_LISTED_PROBLEMS = 50


class DataError(ValueError):
    """The dataset cannot be trained on; `problems` lists each reason with its file."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        shown = problems[:MAX_LISTED_PROBLEMS]
        more = len(problems) - len(shown)
        tail = [f"... and {more} more"] if more else []
        lines = "\n  ".join([*shown, *tail])
        super().__init__(f"{len(problems)} problem(s) with the dataset:\n  {lines}")


@dataclass
class Item:
    """One labelled image, not decoded yet."""

    name: str
    label: int
    load: Callable[[], np.ndarray]
    path: Path | None = None  # a file's: DICOM headers tell the intended use
    group: int | None = None  # its patient (`splits.group_id`), where the data names one


@dataclass
class Listing:
    """What a format reader found: class names, items per split, and problems so far."""

    classes: list[str]
    train: list[Item]
    val: list[Item] | None
    problems: list[str] = field(default_factory=list)
    sha256: str = ""
