"""Checks of a MedMNIST-style npz file's arrays (`models.npz.read_npz`): what a problem
message says when its images, labels or patients cannot be trained on."""

from __future__ import annotations

import numpy as np


def image_problem(images: np.ndarray) -> str | None:
    """Why `images` cannot be read as scans: a dtype whose full scale is not known, or floats
    that are not finite or lie outside [0, 1] (clipping them would train on other images)."""
    if images.dtype.kind != "f":
        if images.dtype in (np.uint8, np.uint16):
            return None
        return f"of dtype {images.dtype}: send uint8 (0-255), uint16 (0-65535) or floats in [0, 1]"
    outside = ~(np.isfinite(images) & (images >= 0) & (images <= 1))
    bad = np.flatnonzero(outside.reshape(len(images), -1).any(axis=1))
    if len(bad) == 0:
        return None
    return (
        f"of dtype {images.dtype}: {len(bad)} image(s) hold values that are not finite or"
        f" outside [0, 1] (first: {first(bad)}); floats must be scaled to [0, 1]"
    )


def label_problem(labels: np.ndarray, count: int) -> str | None:
    """Why `labels` is not one whole-number label per image."""
    if labels.size != count or (labels.ndim > 1 and labels.size != labels.shape[0]):
        return f"of shape {labels.shape} does not give one label per image ({count} images)"
    if labels.dtype.kind in "iub":
        return None
    if labels.dtype.kind != "f":
        return f"of dtype {labels.dtype}: labels must be whole numbers 0..K-1"
    flat = labels.reshape(-1)
    bad = np.flatnonzero(~np.isfinite(flat) | (flat != np.round(flat)))
    if len(bad) == 0:
        return None
    return f"has {len(bad)} label(s) that are not whole numbers (first at: {first(bad)})"


def patient_problem(patients: np.ndarray, count: int) -> str | None:
    """Why `patients` is not one ID (whole number or text) per image."""
    if patients.size != count or (patients.ndim > 1 and patients.size != patients.shape[0]):
        return f"of shape {patients.shape} does not name one patient per image ({count} images)"
    if patients.dtype.kind not in "iuUS":
        return f"of dtype {patients.dtype}: patient IDs must be whole numbers or text"
    return None


def first(indices: np.ndarray) -> str:
    """The first five of the offending indices, for a problem message."""
    return ", ".join(str(i) for i in indices[:5])
