"""Fixtures for the shared service parts: a published model card and both artifact stores."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from models.card import (
    Calibration,
    DatasetInfo,
    InputSpec,
    ModelCard,
    Parity,
    TrainingInfo,
)
from service.storage import ArtifactStore, open_store


def make_run_dir(
    root: Path, onnx: bytes = b"not really onnx, but bytes with a hash"
) -> tuple[Path, ModelCard]:
    """A trainer-like output folder and its card (the registry treats model.onnx as opaque)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.onnx").write_bytes(onnx)
    (root / "metrics.json").write_text('{"val_auc": 0.97}')
    (root / "plots").mkdir(exist_ok=True)
    (root / "plots" / "roc.png").write_bytes(b"\x89PNG fake")
    (root / "checkpoints").mkdir(exist_ok=True)
    (root / "checkpoints" / "last.pt").write_bytes(b"never published")
    card = ModelCard(
        name="draft",
        classes=("normal", "pneumonia"),
        input=InputSpec(size=32, channels=1, mean=(0.5,), std=(0.25,)),
        base_model="efficientnet_lite0",
        dataset=DatasetInfo(uri="/data/x.npz", format="npz", sha256="0" * 64),
        metrics={"val_auc": 0.97},
        calibration=Calibration(temperature=1.3, applied_in_graph=True),
        parity=Parity(max_abs_diff=1e-6, images=32, tolerance=1e-4),
        training=TrainingInfo(
            seconds=1.0, device="cpu", hardware="test", epochs_run=1, best_epoch=1, seed=0
        ),
        onnx_sha256=hashlib.sha256(onnx).hexdigest(),
    )
    return root, card


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    """Each test runs on a local folder and on the moto S3 server over HTTP."""
    if request.param == "file":
        return open_store((tmp_path / "artifacts").as_uri())
    bucket = request.getfixturevalue("s3_bucket")
    endpoint = request.getfixturevalue("moto_server")
    return open_store(f"s3://{bucket}/scantune", endpoint_url=endpoint)
