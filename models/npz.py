"""MedMNIST-style npz datasets: `train_images`/`train_labels`, optional `val_images`/
`val_labels`, and optional `train_patients`/`val_patients` naming each scan's patient (any
ID, numbers or text: only its hash is kept), so that splits keep a patient's scans together
as a CSV manifest's `patient` column does."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from models import npz_checks, splits
from models.listing import DataError, Item, Listing
from models.uri import sha256_file


def read_npz(path: Path, classes: list[str] | None) -> Listing:
    """`train_images`/`train_labels`, optional `val_images`/`val_labels`, each split's
    optional `_patients`; labels 0..K-1."""
    problems: list[str] = []
    try:
        arrays = dict(np.load(path, allow_pickle=False))
    except (OSError, ValueError) as exc:
        raise DataError([f"{path.name}: unreadable npz file ({exc})"]) from exc
    train = _npz_split(arrays, "train", path.name, problems)
    val = _npz_split(arrays, "val", path.name, problems, required=False)
    all_labels = [it.label for it in (train or []) + (val or [])]
    names = classes or [str(i) for i in range(max(all_labels, default=-1) + 1)]
    for it in (train or []) + (val or []):
        if not 0 <= it.label < len(names):
            problems.append(f"{it.name}: unknown label {it.label} (classes {names})")
    train = [it for it in train or [] if 0 <= it.label < len(names)]
    val = None if val is None else [it for it in val if 0 <= it.label < len(names)]
    return Listing(list(names), train, val, problems, sha256_file(path))


def _npz_split(
    arrays: dict[str, np.ndarray],
    split: str,
    fname: str,
    problems: list[str],
    required: bool = True,
) -> list[Item] | None:
    img_key, lab_key = f"{split}_images", f"{split}_labels"
    present = [k for k in (img_key, lab_key) if k in arrays]
    if len(present) < 2:
        if required or present:
            missing = sorted({img_key, lab_key} - set(present))
            problems.append(f"{fname}: missing split arrays {missing}")
        return None
    images, labels = arrays[img_key], arrays[lab_key]
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3)):
        problems.append(f"{fname}: {img_key} of shape {images.shape} is not (N,H,W) or (N,H,W,3)")
        return None
    if 0 in images.shape:
        problems.append(f"{fname}: {img_key} of shape {images.shape} holds no pixels")
        return None
    image_problem = npz_checks.image_problem(images)
    if image_problem:
        problems.append(f"{fname}: {img_key} {image_problem}")
        return None
    label_problem = npz_checks.label_problem(labels, len(images))
    if label_problem:
        problems.append(f"{fname}: {lab_key} {label_problem}")
        return None
    labels = labels.reshape(len(images))
    patients = _patients(arrays, split, len(images), fname, problems)
    scale = _unit_scale(images.dtype)
    return [
        Item(
            f"{fname}:{img_key}[{i}]",
            int(labels[i]),
            _npz_loader(images, i, scale),
            group=None if patients is None else patients[i],
        )
        for i in range(len(images))
    ]


def _patients(
    arrays: dict[str, np.ndarray], split: str, count: int, fname: str, problems: list[str]
) -> list[int | None] | None:
    """Each scan's patient as `splits.group_id` (None where the ID is empty), from the
    split's optional `_patients` array; None when there is none (or it is unusable: said)."""
    key = f"{split}_patients"
    if key not in arrays:
        return None
    problem = npz_checks.patient_problem(arrays[key], count)
    if problem:
        problems.append(f"{fname}: {key} {problem}")
        return None
    ids = [str(value).strip() for value in arrays[key].reshape(count).tolist()]
    return [splits.group_id("patient", value) if value else None for value in ids]


def _unit_scale(dtype: np.dtype) -> float:
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    return 1.0


def _npz_loader(images: np.ndarray, i: int, scale: float) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        image = images[i]
        if image.ndim == 3 and image.shape[-1] == 1:
            image = image[..., 0]
        return (image.astype(np.float32) / np.float32(scale)).clip(0.0, 1.0)

    return load
