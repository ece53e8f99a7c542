"""Attention maps a PACS viewer shows: each classified scan with the model's class activation
map over it, as a DICOM Secondary Capture image (highdicom's `SCImage`) in a series of its
own, beside the scan in its study, marked derived and not for diagnostic use.

Why a Secondary Capture and not an overlay plane or a presentation state: every PACS viewer
displays an SC image as it is, in colour; a Colour Softcopy Presentation State blending the
map over the original is shown by few viewers, and a 1-bit overlay plane cannot carry a map.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from service.hospital.results import ModelIdentity, ReportSettings, ScanResult

if TYPE_CHECKING:
    from pydicom import Dataset

log = logging.getLogger("scantune.hospital")


def _colormap() -> np.ndarray:
    """A 256-entry blue → cyan → yellow → red ramp (jet-like), uint8 RGB."""
    x = np.linspace(0.0, 1.0, 256, dtype=np.float32)
    r = np.clip(1.5 - np.abs(4 * x - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * x - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * x - 1), 0, 1)
    return (np.stack([r, g, b], axis=1) * 255).round().astype(np.uint8)


RAMP = _colormap()
"""The colour of each map level, 0 (least) to 255 (most): the inference service's heatmap PNGs
and the maps sent to a PACS use the same."""
LONGEST_SIDE = 1024
"""Maps are at most this many pixels on their longer side (3 MB of RGB): enough to see where
the model looked; a 3,000-pixel radiograph's map at full size would be 27 MB."""
MAX_OPACITY = 0.55
"""The map's weight over the scan where the model looked most; where it looked least the scan
shows as it is."""
SERIES_OFFSET = 1
"""The maps' Series Number: the report's (`ReportSettings.series_number`) plus this."""


def heat_levels(png_base64: str) -> np.ndarray:
    """The 0-255 levels of an explanation's palette PNG (the inference service's `heatmap_png`:
    each pixel's palette index is its level)."""
    with Image.open(io.BytesIO(base64.b64decode(png_base64))) as image:
        if image.mode != "P":
            raise ValueError(f"an explanation PNG has palette pixels, not {image.mode}")
        return np.asarray(image, dtype=np.uint8)


def blend(scan: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """`scan` (float in [0, 1], grey or RGB) under the map of `levels` (uint8, the scan's height
    and width), at most `LONGEST_SIDE` on the longer side, as uint8 RGB."""
    grey = scan if scan.ndim == 2 else scan[..., :3].mean(axis=2)
    if levels.shape != grey.shape:
        raise ValueError(f"a map of {levels.shape} for a scan of {grey.shape}")
    height, width = grey.shape
    scale = min(1.0, LONGEST_SIDE / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    base = Image.fromarray((np.clip(grey, 0, 1) * 255).round().astype(np.uint8), mode="L")
    base_rgb = np.asarray(base.resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
    heat = np.asarray(
        Image.fromarray(levels, mode="L").resize(size, Image.Resampling.BILINEAR), dtype=np.uint8
    )
    alpha = (heat.astype(np.float32) / 255.0 * MAX_OPACITY)[..., None]
    mixed = base_rgb[..., None] * (1 - alpha) + RAMP[heat].astype(np.float32) * alpha
    return np.asarray(mixed.round().clip(0, 255), dtype=np.uint8)


def build_attention_map(
    source: Dataset,
    pixels: np.ndarray,
    result: ScanResult,
    model: ModelIdentity,
    uids: tuple[str, str],
    instance_number: int,
    settings: ReportSettings,
) -> Dataset:
    """The Secondary Capture of `pixels` (uint8 RGB from `blend`) for the scan `source`
    (its header: Patient and Study are copied from it), under (series, instance) `uids`."""
    import highdicom as hd
    from pydicom import Dataset

    series_uid, instance_uid = uids
    image = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=pixels,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=series_uid,
        series_number=settings.series_number + SERIES_OFFSET,
        sop_instance_uid=instance_uid,
        instance_number=instance_number,
        manufacturer=settings.manufacturer,
        # highdicom asks for an orientation in the patient coordinate system; the SC's own
        # (type 2C) is then the source's as given (combined letters too), empty if it has none
        patient_orientation=("L", "F"),
        transfer_syntax_uid="1.2.840.10008.1.2.1",
    )
    said = f"{model.name} {model.version}: {result.label} {result.probability:.2f}"
    image.SeriesDescription = f"{model.name} {model.version} attention maps"[:64]
    image.ImageType = ["DERIVED", "SECONDARY"]
    image.DerivationDescription = (
        f"Class activation map of {said}, over the source image"
        f"{'; ' + settings.disclaimer if settings.disclaimer else ''}"
    )[:1024]
    image.ImageComments = image.DerivationDescription
    image.PatientOrientation = _orientation(source)  # type: ignore[assignment]
    image.Laterality = source.get("Laterality")  # type 2C: the source's, empty when unknown
    image.BurnedInAnnotation = "NO"
    image.LossyImageCompression = "01" if source.get("LossyImageCompression") == "01" else "00"
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    image.SourceImageSequence = [reference]
    if "SpecificCharacterSet" in source:
        image.SpecificCharacterSet = source.SpecificCharacterSet
    return image


def scan_map(
    data: bytes,
    source: Dataset,
    prediction: Mapping[str, Any],
    model: ModelIdentity,
    uids: tuple[str, str],
    instance_number: int,
    settings: ReportSettings,
) -> Dataset | None:
    """The map of one classified scan (its file `data`, its header `source`, its v1 answer
    `prediction` with the explanation) as `build_attention_map` makes it; None when it has
    none: no explanation (the model has no CAM output), or the scan does not decode."""
    from models import scans

    explained = prediction.get("explanation")
    if not explained:
        return None
    try:
        pixels = blend(scans.decode(data), heat_levels(explained["png_base64"]))
    except (scans.ImageDecodeError, ValueError) as exc:
        log.warning("no attention map for one scan: %s", type(exc).__name__)
        return None
    result = ScanResult.from_prediction(prediction)
    return build_attention_map(source, pixels, result, model, uids, instance_number, settings)


def _orientation(source: Dataset) -> list[str] | None:
    """The source's Patient Orientation when it gives both directions, else None (empty)."""
    given = source.get("PatientOrientation")
    if given is None or len(given) != 2 or not all(given):
        return None
    return [str(given[0]), str(given[1])]


def fitted_map(image: Dataset, most: int) -> bytes | None:
    """The map as a JPEG whose base64 takes at most `most` characters (an engine's cap on an
    HL7 field): at quality 90, else 75 and 60, else halved until it fits (not under 64 pixels:
    None, no map). Written by hand: Pillow saves to a quality, never to a size."""
    picture = Image.fromarray(np.asarray(image.pixel_array, dtype=np.uint8), "RGB")
    qualities: tuple[int, ...] = (90, 75, 60)
    while True:
        for quality in qualities:
            out = io.BytesIO()
            picture.save(out, format="JPEG", quality=quality)
            if 4 * -(-out.tell() // 3) <= most:  # base64's length
                return out.getvalue()
        if min(picture.size) // 2 < 64:
            return None
        picture = picture.resize(
            (picture.width // 2, picture.height // 2), Image.Resampling.LANCZOS
        )
        qualities = (75,)


def encoded_map(image: Dataset, kind: str) -> bytes:
    """A map's Secondary Capture (from `build_attention_map`) as a picture file an EHR or an
    engine shows: "PNG" (lossless) or "JPEG" (quality 90: what HL7 v2's ED lists). PNG at
    zlib level 1: a fifth of the default level's time for a quarter more bytes
    (bench/attention_maps.py), as the node's one delivery thread makes every map."""
    out = io.BytesIO()
    picture = Image.fromarray(np.asarray(image.pixel_array, dtype=np.uint8), "RGB")
    options = {"quality": 90} if kind == "JPEG" else {"compress_level": 1}
    picture.save(out, format=kind, **options)
    return out.getvalue()
