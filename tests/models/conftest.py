"""Fixtures for the ML library tests: job specs over the real PneumoniaMNIST data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.spec import JobSpec

CLASSES = ["normal", "pneumonia"]


def make_spec(data: Path, **overrides: Any) -> JobSpec:
    """A small, fast job spec over an npz file; `overrides` go in at the top level."""
    recipe = {"batch_size": 32, "early_stopping_patience": 0, **overrides.pop("recipe", {})}
    dataset = {
        "uri": str(data),
        "format": "npz",
        "classes": CLASSES,
        **overrides.pop("dataset", {}),
    }
    raw = {
        "model_name": "test-model",
        "dataset": dataset,
        "image_size": 32,
        "epochs": 1,
        "recipe": recipe,
        **overrides,
    }
    return JobSpec.model_validate(raw)


@pytest.fixture
def spec_factory(pneumonia_small_npz: Path) -> Any:
    return lambda **overrides: make_spec(pneumonia_small_npz, **overrides)


@pytest.fixture(scope="session")
def pneumonia_arrays(pneumonia_npz: Path) -> dict[str, np.ndarray]:
    with np.load(pneumonia_npz) as data:
        return {k: data[k] for k in data.files}
