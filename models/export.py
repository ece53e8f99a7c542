"""ONNX export of a fine-tuned classifier, with its own checks.

The graph takes `image` (N, C, size, size) float32, normalised as the card says, and returns
`probabilities` (N, K: softmax of logits / temperature, calibration inside the graph),
`logits` (N, K) and `cam` (N, K, h, w: the head at every cell of the last feature map).
The batch axis is dynamic. An `Ensemble` (k fold models, optionally with a mirrored view
each) exports to the same contract, its outputs the members' mean. After export,
`onnx.checker` validates the file and onnxruntime's CPU provider is compared with PyTorch on
real validation images.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch

from models.card import OutputSpec, Parity
from models.network import Classifier, Ensemble, ExportModule

OPSET = 17
PARITY_TOLERANCE = 1e-4
MIN_PARITY_IMAGES = 32


class ExportError(RuntimeError):
    """The exported graph is invalid or does not reproduce the PyTorch model."""


def export_onnx(
    model: Classifier | Ensemble,
    path: Path,
    *,
    size: int,
    channels: int,
    temperature: float = 1.0,
    outputs: OutputSpec | None = None,
    opset: int = OPSET,
) -> None:
    """Write the eval-mode model as ONNX to `path` and validate it with onnx.checker."""
    import onnx

    names = outputs or OutputSpec()
    wrapper = ExportModule(model, temperature).cpu().eval()
    dummy = torch.zeros(2, channels, size, size)
    output_names = [names.probabilities, names.logits, names.cam or "cam"]
    batch_axis = {0: "batch"}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript-exporter deprecation notices
        torch.onnx.export(
            wrapper,
            (dummy,),
            buffer,  # type: ignore[arg-type]  # file-like objects are accepted
            input_names=[names.input],
            output_names=output_names,
            dynamic_axes={n: batch_axis for n in [names.input, *output_names]},
            opset_version=opset,
            dynamo=False,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"exported graph is invalid: {exc}") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())


def onnx_outputs(path: Path, images: np.ndarray) -> dict[str, np.ndarray]:
    """Run the graph on onnxruntime's CPU provider; outputs by name."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    results = session.run(names, {session.get_inputs()[0].name: images.astype(np.float32)})
    return dict(zip(names, results, strict=True))


def torch_outputs(
    model: Classifier | Ensemble, images: np.ndarray, temperature: float
) -> dict[str, np.ndarray]:
    wrapper = ExportModule(model, temperature).cpu().eval()
    with torch.no_grad():
        probabilities, logits, cam = wrapper(torch.from_numpy(images))
    return {"probabilities": probabilities.numpy(), "logits": logits.numpy(), "cam": cam.numpy()}


def check_parity(
    path: Path,
    model: Classifier | Ensemble,
    images: np.ndarray,
    *,
    temperature: float = 1.0,
    tolerance: float = PARITY_TOLERANCE,
) -> Parity:
    """Compare onnxruntime with PyTorch on normalised `images`; raise above `tolerance`."""
    if len(images) < MIN_PARITY_IMAGES:
        raise ExportError(f"parity needs at least {MIN_PARITY_IMAGES} images, got {len(images)}")
    ours = onnx_outputs(path, images)
    ref = torch_outputs(model, images, temperature)
    diff = float(np.abs(ours["probabilities"] - ref["probabilities"]).max())
    if not diff <= tolerance:
        raise ExportError(f"onnxruntime differs from PyTorch by {diff:.2e} > {tolerance:.0e}")
    return Parity(max_abs_diff=diff, images=len(images), tolerance=tolerance)
