"""Preprocessing of decoded scans, shared by training and inference: resizing, channels and
normalisation to the (C, size, size) tensor a model card describes.

A decoded scan (`models.scans.decode`) is a float32 array in [0, 1], shaped (H, W) for
grayscale or (H, W, 3) for colour. Torch-free (numpy, Pillow), so the inference service
preprocesses with exactly the code the trainer used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from models.card import InputSpec

PREPROCESSING_VERSION = 1
"""What `models.scans` turns a file into, as a number a model card records (`InputSpec.
preprocessing_version`) and the inference service compares with its own: raise it whenever
`decode` or `to_model_input` give different values for some file than before, so a model
trained on the old values is reported as seeing other input than it learned from.

- none recorded: cards written before the number was (any decoder up to 2026-11-29);
- 1: EXIF orientation applied to PNG and JPEG; a DICOM window by its VOI LUT Function
  (LINEAR, LINEAR_EXACT, SIGMOID); a VOI LUT indexed by the rounded value; pixel padding
  left out of a DICOM's full range.
"""

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601-2, as Pillow's "L"


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """(H, W) or (H, W, 3) in [0, 1] to (channels, H, W): luminance for 1, replicated gray for 3."""
    if image.ndim == 3:
        if channels == 3:
            return np.ascontiguousarray(image.transpose(2, 0, 1))
        return (image @ LUMA)[None].astype(np.float32)
    plane = image[None]
    return np.repeat(plane, 3, axis=0) if channels == 3 else plane


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to size x size with Pillow's antialiased bilinear filter, per channel, in float32."""
    if image.shape[:2] == (size, size):
        return image.astype(np.float32, copy=False)
    if image.ndim == 2:
        return _resize_plane(image, size)
    return np.stack([_resize_plane(image[..., c], size) for c in range(image.shape[2])], axis=-1)


def _resize_plane(plane: np.ndarray, size: int) -> np.ndarray:
    resized = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32), mode="F").resize(
        (size, size), Image.Resampling.BILINEAR
    )
    return np.asarray(resized, dtype=np.float32)


def prepare(image: np.ndarray, size: int, channels: int) -> np.ndarray:
    """Resize and set channels: (channels, size, size) in [0, 1], before normalisation.

    Training caches this form and augments it; inference normalises it straight away.
    """
    if image.ndim == 3 and channels == 1:
        image = (image @ LUMA).astype(np.float32)
    return to_channels(resize(image, size), channels)


def normalize(chw: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(x - mean) / std per channel, float32."""
    m = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
    return ((chw - m) / s).astype(np.float32, copy=False)


def to_model_input(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """A decoded scan to the (C, size, size) float32 input the card's network expects."""
    return normalize(prepare(image, spec.size, spec.channels), spec.mean, spec.std)


def to_batch(images: Sequence[np.ndarray], spec: InputSpec) -> np.ndarray:
    """Decoded scans to one contiguous (N, C, size, size) batch."""
    out = np.empty((len(images), spec.channels, spec.size, spec.size), dtype=np.float32)
    for i, image in enumerate(images):
        out[i] = to_model_input(image, spec)
    return out
