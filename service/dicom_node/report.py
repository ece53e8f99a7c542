"""The result of a series: the structured report built by `service.hospital.sr` (the same
builder the inference service answers `Accept: application/dicom` with), under UIDs derived
from what was classified, so that redoing a classification makes the same result."""

from __future__ import annotations

import io
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from models.card import ModelCard
from service.dicom_node.classify import Classification

if TYPE_CHECKING:
    from pydicom import Dataset

    from service.hospital.results import ModelIdentity, ReportSettings

UID_NAMESPACE = uuid.UUID("8f1f5a2e-2b7e-4b53-9a0c-5ca7d1c0de23")  # scantune DICOM node results


def result_uids(
    root: str | None,
    study_uid: str,
    series_uid: str,
    model: str,
    version: int,
    sops: list[str],
    generation: int = 1,
) -> tuple[str, str]:
    """(series, instance) UIDs of a result: the same sources and model version always give
    the same SR SOP Instance UID, the result's identity. A later work item of the series
    (`generation` > 1: its instances sent again after its result was recalled) makes a result
    of its own: a PACS that took the rejection note of the first refuses its UID for good."""
    series = derived_uid(root, "series", study_uid, series_uid, model)
    parts = [series_uid, model, str(version), *sorted(sops), *again(generation)]
    return series, derived_uid(root, "instance", *parts)


def again(generation: int) -> list[str]:
    """What sets a later work item's result UIDs apart (nothing for the first: its UIDs are
    as they always were)."""
    return [f"generation {generation}"] if generation > 1 else []


def derived_uid(root: str | None, *parts: str) -> str:
    """Under `root` (pydicom's hash of the parts), else a 2.25 UID of a name-based UUID."""
    if root:
        from pydicom.uid import generate_uid

        return str(generate_uid(prefix=f"{root}.", entropy_srcs=list(parts)))
    return f"2.25.{uuid.uuid5(UID_NAMESPACE, chr(31).join(parts)).int}"


def report_terms(
    found: Classification, root: str | None, disclaimer: str | None
) -> tuple[ModelIdentity, ReportSettings]:
    """The model a classification names and the node's report settings, as the builders of
    its results (the SR, the attention maps) take them."""
    from service.hospital.results import ModelIdentity, ReportSettings

    card = ModelCard.model_validate(found.card)
    identity = ModelIdentity.from_card(card, int(found.model["version"]))
    return identity, ReportSettings(uid_root=root, disclaimer=disclaimer or None)


def build_report(
    sources: Sequence[Dataset],
    found: Classification,
    uids: tuple[str, str],
    root: str | None,
    disclaimer: str | None,
) -> bytes:
    """The SR of `found` for `sources`, as a DICOM file's bytes."""
    from service.hospital.results import ScanResult
    from service.hospital.sr import build_sr

    identity, settings = report_terms(found, root, disclaimer)
    results = [ScanResult.from_prediction(p) for p in found.predictions]
    sr = build_sr(sources, results, identity, settings)
    series_uid, instance_uid = uids
    sr.SeriesInstanceUID = series_uid
    sr.SOPInstanceUID = instance_uid
    sr.file_meta.MediaStorageSOPInstanceUID = sr.SOPInstanceUID
    out = io.BytesIO()
    sr.save_as(out, enforce_file_format=True)
    return out.getvalue()
