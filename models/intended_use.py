"""What a model was trained on, read from its DICOM training files: modality, body part, view.

The card records it (`ModelCard.intended_use`) and the inference service refuses DICOM scans
of another modality. A job spec's `dataset.intended_use` wins over what is read here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from itertools import islice
from pathlib import Path

from models.card import IntendedUse

SAME_KIND = (frozenset({"CR", "DX"}),)
"""Modalities that are one kind of scan: computed and digital radiography are both X-rays."""
SAMPLE = 64
"""DICOM headers read at most: enough to see what a dataset holds, cheap for large ones."""


def accepted(modality: str) -> frozenset[str]:
    """The modalities a model trained on `modality` takes."""
    return next((kind for kind in SAME_KIND if modality in kind), frozenset({modality}))


def from_dicom_files(paths: Iterable[Path]) -> IntendedUse | None:
    """The modality the DICOM files among `paths` share (one of a kind: the commonest), and
    their body part and view where all agree; None without DICOM files or with modalities of
    different kinds."""
    headers = list(islice(filter(None, map(_header, paths)), SAMPLE))
    modalities = Counter(h[0] for h in headers if h[0])
    if not modalities:
        return None
    modality = modalities.most_common(1)[0][0]
    if not set(modalities) <= accepted(modality):
        return None
    parts, views = {h[1] for h in headers}, {h[2] for h in headers}
    return IntendedUse(
        modality=modality,
        body_part=parts.pop() if len(parts) == 1 else None,
        view=views.pop() if len(views) == 1 else None,
    )


def _header(path: Path) -> tuple[str | None, str | None, str | None] | None:
    """(Modality, Body Part Examined, View Position) of a DICOM file; None for another file."""
    import pydicom

    try:
        with path.open("rb") as fh:
            if fh.read(132)[128:] != b"DICM":
                return None
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # unreadable: the data check reports it, with its reason
        return None

    def value(keyword: str, limit: int) -> str | None:
        text = str(ds.get(keyword) or "").strip().upper()
        return text[:limit] if text else None

    modality = value("Modality", 16)
    valid = modality if modality and modality.isalpha() and len(modality) >= 2 else None
    return valid, value("BodyPartExamined", 16), value("ViewPosition", 16)
