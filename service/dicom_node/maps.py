"""A series' attention maps, for the destinations that take them (`attention_maps: true`):
one Secondary Capture per classified scan (`service.hospital.attention_map`), kept in the
spool beside the series' SR as one uncompressed zip named after it, sent with the SR and
deleted with it.

The scans are decoded here with the inference service's own decoders (`models.scans`,
GDCM confined to its helper process), under UIDs derived from what was classified, so that
classifying again makes the same maps. A scan that cannot be decoded or has no map is left
out; the SR still goes.
"""

from __future__ import annotations

import io
import logging
import zipfile
from collections.abc import Sequence
from typing import TYPE_CHECKING

from service.dicom_node import metrics
from service.dicom_node.classify import Classification
from service.dicom_node.report import again, derived_uid, report_terms
from service.dicom_node.spool import Spool, maps_file

if TYPE_CHECKING:
    from pydicom import Dataset

log = logging.getLogger("scantune.dicom")


def build_maps(
    files: Sequence[bytes],
    sources: Sequence[Dataset],
    found: Classification,
    root: str | None,
    disclaimer: str | None,
    generation: int = 1,
) -> bytes | None:
    """The zip of the maps of `files` (with their headers `sources`), or None when no scan
    has one (the model has no CAM output, or no scan decodes); a later work item of the
    series gets UIDs of its own, as its SR does (`report.again`)."""
    from service.hospital.attention_map import scan_map

    identity, settings = report_terms(found, root, disclaimer)
    model, version = identity.name, str(identity.version)
    study, series = str(sources[0].StudyInstanceUID), str(sources[0].SeriesInstanceUID)
    series_uid = derived_uid(root, "maps-series", study, series, model, version, *again(generation))
    out, skipped = io.BytesIO(), 0
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as bundle:
        for i, (data, source, prediction) in enumerate(
            zip(files, sources, found.predictions, strict=True)
        ):
            uid = derived_uid(
                root, "map", str(source.SOPInstanceUID), model, version, *again(generation)
            )
            image = scan_map(data, source, prediction, identity, (series_uid, uid), i + 1, settings)
            if image is None:
                skipped += 1
                continue
            written = io.BytesIO()
            image.save_as(written, enforce_file_format=True)
            bundle.writestr(f"{i:05d}.dcm", written.getvalue())
    metrics.ATTENTION_MAPS.labels("made").inc(len(files) - skipped)
    metrics.ATTENTION_MAPS.labels("none").inc(skipped)
    if skipped == len(files):
        return None
    if skipped:
        log.warning("attention maps for %d of %d scans", len(files) - skipped, len(files))
    return out.getvalue()


def read_maps(spool: Spool, result_file: str) -> list[bytes]:
    """The series' maps as DICOM files' bytes, in scan order; none when it has none."""
    try:
        data = spool.read(maps_file(result_file))
    except FileNotFoundError:
        return []
    with zipfile.ZipFile(io.BytesIO(data)) as bundle:
        return [bundle.read(name) for name in sorted(bundle.namelist())]
