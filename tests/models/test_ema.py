"""EMA of weights: the average is what is validated, selected and exported, and resumes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.finetune import build_model
from models.progress import TrainingCancelled
from models.runner import run_training
from models.trainer import Trainer

pytestmark = pytest.mark.slow


def _head_shift(spec, data, tmp_path: Path) -> float:
    """How far one epoch moved the head's weights from where they started."""
    model = build_model(spec, 2)
    start = model.head[-1].weight.detach().clone()
    Trainer(model, spec, data, tmp_path).fit()
    return float((model.head[-1].weight.detach() - start).norm())


def test_the_average_lags_the_live_weights(spec_factory, tmp_path: Path) -> None:
    from models.data import load_dataset

    plain = spec_factory(image_size=24)
    averaged = spec_factory(image_size=24, recipe={"ema_decay": 0.9})
    data = load_dataset(plain.dataset, size=24, channels=1)
    moved = _head_shift(plain, data, tmp_path / "plain")
    moved_avg = _head_shift(averaged, data, tmp_path / "ema")
    # five steps with decay 0.9: the kept average sits well short of the last step's weights
    assert 0 < moved_avg < 0.9 * moved


def test_a_resumed_run_keeps_its_average(spec_factory, tmp_path: Path) -> None:
    spec = spec_factory(epochs=2, image_size=24, dataset={"limit": 64}, recipe={"ema_decay": 0.8})
    straight = run_training(spec, tmp_path / "straight")
    calls = {"n": 0}

    def stop_in_second_epoch() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(TrainingCancelled):
        run_training(spec, tmp_path / "resumed", should_stop=stop_in_second_epoch)
    resumed = run_training(spec, tmp_path / "resumed", resume=True)
    for key in ("val_loss", "val_auc"):
        assert resumed.history[-1][key] == pytest.approx(straight.history[-1][key], abs=1e-6)
    state = torch.load(tmp_path / "resumed" / "checkpoints" / "last.pt", weights_only=False)
    assert state["ema"] is not None and int(state["ema"]["n_averaged"]) == 4  # 2 x 2 steps
