"""What a model costs in onnxruntime: exported as a job exports it, timed per image.

Shared by the quality harness (fold ensembles, flip TTA) and the resolution cost bench.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from models.network import Classifier, Ensemble


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
