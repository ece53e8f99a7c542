"""Fixtures for hospital formats: real X-ray DICOM fixtures placed in studies of their own."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

IMAGES = Path(__file__).resolve().parents[1] / "data" / "images"
SCANS = ("normal_0_mono1.dcm", "pneumonia_0_mono1.dcm")


def in_study(
    name: str, study_uid: str, *, modality: str | None = None, **extra: str
) -> pydicom.Dataset:
    """The fixture scan `name` as an instance of study `study_uid`, with fresh series and
    instance UIDs (the fixtures carry a patient but no study)."""
    ds = pydicom.dcmread(IMAGES / name)
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "101500", "7", "A1"
    if modality:
        ds.Modality = modality
    for key, value in extra.items():
        setattr(ds, key, value)
    return ds


@pytest.fixture
def study(tmp_path: Path) -> Callable[..., list[Path]]:
    """Write scans of one new study to files; returns their paths."""

    def write(names: tuple[str, ...] = SCANS, **kwargs: str) -> list[Path]:
        uid = generate_uid()
        paths = []
        for i, name in enumerate(names):
            path = tmp_path / f"{uid[-8:]}-{i}.dcm"
            in_study(name, uid, **kwargs).save_as(path, enforce_file_format=True)
            paths.append(path)
        return paths

    return write
