"""Fold ensembles and flip TTA inside one ONNX graph with the single model's contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.backbones import create_backbone
from models.evaluate import softmax
from models.export import check_parity, export_onnx, onnx_outputs
from models.network import Classifier, Ensemble, build_head
from models.scans import prepare

SIZE = 32


def _member(seed: int) -> Classifier:
    torch.manual_seed(seed)
    backbone = create_backbone("resnet18", pretrained=False, in_chans=1)
    return Classifier(backbone, build_head(backbone.num_features, 2, [], 0.2)).eval()


@pytest.fixture(scope="module")
def members() -> list[Classifier]:
    return [_member(seed) for seed in range(3)]


@pytest.fixture(scope="module")
def scans(pneumonia_arrays: dict[str, np.ndarray]) -> np.ndarray:
    """40 real chest X-rays, prepared and normalised as the card says."""
    images = pneumonia_arrays["val_images"][:40].astype(np.float32) / 255.0
    prepared = np.stack([prepare(im, SIZE, 1) for im in images])
    return ((prepared - 0.5) / 0.5).astype(np.float32)


def _reference(members: list[Classifier], x: np.ndarray, hflip: bool) -> dict[str, np.ndarray]:
    """The mean of each member's PyTorch outputs, each view run on its own."""
    logits, cams = [], []
    with torch.no_grad():
        for member in members:
            views = [(torch.from_numpy(x), False)]
            if hflip:
                views.append((torch.from_numpy(x[..., ::-1].copy()), True))
            for view, mirrored in views:
                view_logits, cam = member.forward_all(view)
                logits.append(view_logits.numpy())
                cams.append(cam.flip(3).numpy() if mirrored else cam.numpy())
    return {"logits": np.mean(logits, axis=0), "cam": np.mean(cams, axis=0)}


@pytest.mark.parametrize("hflip", [False, True])
def test_onnx_output_is_the_mean_of_the_members(
    members: list[Classifier], scans: np.ndarray, hflip: bool, tmp_path: Path
) -> None:
    path = tmp_path / "ensemble.onnx"
    ensemble = Ensemble(members, hflip=hflip).eval()
    export_onnx(ensemble, path, size=SIZE, channels=1, temperature=1.5)

    got = onnx_outputs(path, scans)
    want = _reference(members, scans, hflip)

    assert set(got) == {"probabilities", "logits", "cam"}
    assert np.abs(got["logits"] - want["logits"]).max() <= 1e-4
    assert np.abs(got["cam"] - want["cam"]).max() <= 1e-4
    expected_probs = softmax(want["logits"], temperature=1.5)
    assert np.abs(got["probabilities"] - expected_probs).max() <= 1e-4
    # the members really disagree, so a graph holding one of them would fail the above
    alone = _reference(members[:1], scans, hflip)["logits"]
    assert np.abs(alone - want["logits"]).max() > 1e-2
    parity = check_parity(path, ensemble, scans, temperature=1.5)
    assert parity.max_abs_diff <= 1e-4 and parity.images == 40


def test_the_ensemble_keeps_a_dynamic_batch(
    members: list[Classifier], scans: np.ndarray, tmp_path: Path
) -> None:
    path = tmp_path / "ensemble.onnx"
    export_onnx(Ensemble(members, hflip=True).eval(), path, size=SIZE, channels=1)
    one = onnx_outputs(path, scans[:1])["probabilities"]
    many = onnx_outputs(path, scans[:7])["probabilities"]
    assert one.shape == (1, 2) and many.shape == (7, 2)
    assert np.abs(one[0] - many[0]).max() <= 1e-5


def test_an_ensemble_needs_members() -> None:
    with pytest.raises(ValueError, match="at least one member"):
        Ensemble([])
