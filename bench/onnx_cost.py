"""What a model costs in onnxruntime: exported as a job exports it, timed per image.

Shared by the quality harness (`ensemble_cost`: fold ensembles, flip TTA) and the resolution
cost bench.
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.finetune import build_model
from models.network import Classifier, Ensemble
from models.spec import JobSpec


def exported_session(model: Classifier | Ensemble, size: int, channels: int) -> tuple[Any, float]:
    """`model` exported as a job would export it, in an onnxruntime CPU session; the file's MB."""
    import onnxruntime as ort

    from models.export import export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(model, path, size=size, channels=channels)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session, path.stat().st_size / 1e6


def ms_per_image(session: Any, batch: int, size: int, channels: int, repeats: int) -> float:
    """Median onnxruntime milliseconds per image of a `batch`-image run, after one warm-up."""
    x = np.random.default_rng(0).random((batch, channels, size, size), np.float32)
    session.run(None, {"image": x})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {"image": x})
        times.append((time.perf_counter() - start) / batch)
    return 1000 * float(np.median(times))


def _jittered(model: torch.nn.Module, seed: int) -> Any:
    """A copy with slightly different weights, so no runtime can merge members as one."""
    twin = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 1e-3)
    return twin


def ensemble_cost(spec: JobSpec, repeats: int = 30) -> list[dict[str, Any]]:
    """Per-image onnxruntime latency of one model, fold ensembles and flip TTA (same weights)."""
    size, channels = spec.image_size, spec.recipe.channels
    member = build_model(spec, 2).eval()
    rows = []
    for folds, hflip in ((1, False), (1, True), (3, False), (3, True), (5, False)):
        members = [_jittered(member, seed) for seed in range(folds)]
        model = Ensemble(members, hflip=hflip) if folds > 1 or hflip else member
        session, megabytes = exported_session(model, size, channels)
        row: dict[str, Any] = {"folds": folds, "hflip": hflip, "onnx_mb": megabytes}
        for batch in (1, 32):
            row[f"ms_per_image_batch{batch}"] = ms_per_image(
                session, batch, size, channels, repeats
            )
        print("inference", json.dumps(row), flush=True)
        rows.append(row)
    return rows
