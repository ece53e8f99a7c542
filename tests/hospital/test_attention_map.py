"""Attention maps for a PACS: the scan under the model's map, as a Secondary Capture that
dciodvfy (dicom3tools) finds no error in, in the source's study, referencing the scan."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from models import scans
from service.hospital.attention_map import (
    LONGEST_SIDE,
    MAX_OPACITY,
    RAMP,
    blend,
    build_attention_map,
    heat_levels,
)
from service.hospital.results import ReportSettings, ScanResult
from service.inference.explain import heatmap_png
from tests.hospital.conftest import IMAGES, in_study
from tests.hospital.test_sr import MODEL

SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"


def left_to_right(height: int, width: int) -> np.ndarray:
    """A class activation map that rises from the left edge (0) to the right edge (most)."""
    return np.tile(np.linspace(0.0, 3.0, 7, dtype=np.float32), (7, 1))[:, :width][:height]


def test_the_map_leaves_the_scan_where_the_model_did_not_look_and_colours_where_it_did() -> None:
    scan = scans.decode((IMAGES / "normal_0_mono1.dcm").read_bytes())
    height, width = scan.shape[:2]
    levels = heat_levels(heatmap_png(left_to_right(7, 7), height, width))
    assert (
        levels.shape == (height, width) and levels[:, 0].max() == 0 and levels[:, -1].min() == 255
    )
    rgb = blend(scan, levels)
    assert rgb.dtype == np.uint8 and rgb.shape == (height, width, 3)  # small: kept at its size
    grey = (np.clip(scan, 0, 1) * 255).round()
    assert np.array_equal(rgb[:, 0, 0], rgb[:, 0, 2])  # no colour at the left edge
    assert np.abs(rgb[:, 0, 0].astype(float) - grey[:, 0]).max() <= 1
    expected = grey[:, -1] * (1 - MAX_OPACITY) + RAMP[255][0] * MAX_OPACITY
    assert np.abs(rgb[:, -1, 0].astype(float) - expected).max() <= 1.5  # red at the right edge
    assert (rgb[:, -1, 0] >= rgb[:, -1, 2]).all()


def test_a_large_scan_gives_a_map_of_at_most_the_longest_side() -> None:
    scan = np.linspace(0, 1, 3000 * 2000, dtype=np.float32).reshape(3000, 2000)
    levels = np.zeros((3000, 2000), dtype=np.uint8)
    assert blend(scan, levels).shape == (LONGEST_SIDE, round(2000 * LONGEST_SIDE / 3000), 3)
    with pytest.raises(ValueError, match="a map of"):
        blend(scan, levels[:10])


@pytest.mark.skipif(not shutil.which("dciodvfy"), reason="dicom3tools is installed by .ci/run")
def test_the_secondary_capture_is_valid_and_sits_beside_its_scan(tmp_path: Path) -> None:
    source = in_study("pneumonia_0_mono1.dcm", generate_uid())
    scan = scans.decode((IMAGES / "pneumonia_0_mono1.dcm").read_bytes())
    levels = heat_levels(heatmap_png(left_to_right(7, 7), *scan.shape[:2]))
    result = ScanResult("pneumonia", {"normal": 0.125, "pneumonia": 0.875})
    uids = (generate_uid(), generate_uid())
    settings = ReportSettings(uid_root="1.2.826.0.1.99")
    image = build_attention_map(source, blend(scan, levels), result, MODEL, uids, 2, settings)
    path = tmp_path / "map.dcm"
    image.save_as(path, enforce_file_format=True)
    checked = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    errors = [line for line in (checked.stdout + checked.stderr).splitlines() if "Error" in line]
    assert errors == []

    stored = pydicom.dcmread(io.BytesIO(path.read_bytes()))
    assert stored.SOPClassUID == SC_STORAGE and stored.Modality == "OT"
    assert (stored.SeriesInstanceUID, stored.SOPInstanceUID) == uids
    assert stored.StudyInstanceUID == source.StudyInstanceUID
    assert (stored.PatientID, stored.AccessionNumber) == (source.PatientID, "A1")
    assert stored.SeriesNumber == settings.series_number + 1 and stored.InstanceNumber == 2
    assert stored.PhotometricInterpretation == "RGB" and stored.SamplesPerPixel == 3
    assert list(stored.ImageType) == ["DERIVED", "SECONDARY"]
    assert stored.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert "chest-xray 3: pneumonia 0.88" in stored.DerivationDescription
    assert "not for diagnostic use" in stored.DerivationDescription
    assert stored.pixel_array.shape == (*scan.shape[:2], 3)


def test_a_map_for_an_engine_that_caps_a_field_shrinks_until_it_fits_or_is_left_out() -> None:
    from PIL import Image

    from service.hospital.attention_map import encoded_map, fitted_map

    grain = np.random.default_rng(0).random((LONGEST_SIDE, LONGEST_SIDE), dtype=np.float32)
    levels = np.tile(np.linspace(0, 255, LONGEST_SIDE).astype(np.uint8), (LONGEST_SIDE, 1))
    source = in_study("pneumonia_0_mono1.dcm", generate_uid())
    result = ScanResult("pneumonia", {"normal": 0.125, "pneumonia": 0.875})
    settings = ReportSettings(uid_root="1.2.826.0.1.99")
    uids = (generate_uid(), generate_uid())
    image = build_attention_map(source, blend(grain, levels), result, MODEL, uids, 2, settings)
    whole = encoded_map(image, "JPEG")
    assert len(whole) > 200_000  # a 1,024-pixel map of a grainy scan: too big for many engines
    assert fitted_map(image, 2 * len(whole)) == whole  # room enough: as it was
    for most in (150_000, 60_000, 8_000):
        fitted = fitted_map(image, most)
        assert fitted is not None and 4 * -(-len(fitted) // 3) <= most, most
        picture = Image.open(io.BytesIO(fitted))
        assert picture.format == "JPEG" and picture.size[0] >= 64
    assert Image.open(io.BytesIO(fitted_map(image, 8_000) or b"")).size[0] < LONGEST_SIDE
    assert fitted_map(image, 300) is None  # not even 64 pixels fit: no map rather than a blur
