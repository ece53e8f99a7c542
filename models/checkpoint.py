"""Training checkpoints: written atomically after every epoch, read back by `resume`.

`last.pt` holds everything needed to continue (model, optimiser, scheduler, scaler, RNG state,
history, early-stopping state); `best.pt` holds the weights of the best epoch so far.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

LAST = "last.pt"
BEST = "best.pt"


def save(state: dict[str, Any], path: Path) -> None:
    """torch.save to a temporary name, then rename: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load(path: Path) -> dict[str, Any]:
    # Our own files, holding plain containers, tensors and numbers only.
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return state


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
