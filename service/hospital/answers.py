"""A predict's hospital side: checks made before the model runs, and the answer after.

Before: which scans are DICOM (their headers, read without pixels), whether their modality
is the one the model was trained on, and, when an SR is asked for or stored, that they are
all DICOM and of one study. After: the JSON answer gains each DICOM scan's UIDs; the answer
becomes an SR, a FHIR Bundle or an HL7 v2 ORU^R01 (rendered from the SR) when the request
asked for one; `?store=true` stores the SR.
Plain objects: the Flask view passes the request's parts in.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from models import scans as scan_files
from models.card import ModelCard
from models.intended_use import accepted
from service.errors import Unprocessable
from service.hospital.dicomweb import DicomwebConfig, Pacs
from service.hospital.fhir import FHIR_MEDIA_TYPE, build_bundle
from service.hospital.fhir_transaction import add_maps
from service.hospital.hl7v2 import HL7_MEDIA_TYPE, build_oru
from service.hospital.multipart import MULTIPART_DICOM, multipart_dicom
from service.hospital.results import (
    ModelIdentity,
    ReportSettings,
    ScanResult,
    ScanUIDs,
    Subject,
)
from service.hospital.sr import SR_MEDIA_TYPE, build_sr, check_one_study, new_uid
from service.hospital.sr_findings import NotReportable

if TYPE_CHECKING:
    from pydantic import SecretStr
    from pydicom import Dataset

    from service.config import InferenceSettings

JSON_MEDIA_TYPE = "application/json"
MEDIA_TYPES = (JSON_MEDIA_TYPE, SR_MEDIA_TYPE, FHIR_MEDIA_TYPE, HL7_MEDIA_TYPE, MULTIPART_DICOM)
"""What a predict answers in, by Accept; JSON unless another is asked for."""
FROM_SR = (SR_MEDIA_TYPE, HL7_MEDIA_TYPE, MULTIPART_DICOM)
"""The answers made from the request's SR: DICOM scans of one study only."""


@dataclass(frozen=True)
class Scan:
    """An upload's name, its bytes and, for DICOM, its header (read without pixels)."""

    name: str
    header: Dataset | None
    data: bytes


def report_settings(settings: InferenceSettings) -> ReportSettings:
    return ReportSettings(uid_root=settings.dicom_uid_root, disclaimer=settings.result_disclaimer)


def pacs(settings: InferenceSettings) -> Pacs | None:
    """The configured DICOMweb server, or None when there is none."""
    if not settings.dicomweb_url:
        return None
    return Pacs(
        DicomwebConfig(
            url=settings.dicomweb_url,
            timeout_s=settings.dicomweb_timeout_s,
            deadline_s=settings.dicomweb_deadline_s,
            token=_secret(settings.dicomweb_token),
            token_file=settings.dicomweb_token_file,
            username=settings.dicomweb_username,
            password=_secret(settings.dicomweb_password),
            password_file=settings.dicomweb_password_file,
        )
    )


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value else None


def scans_of(uploads: Sequence[Any]) -> list[Scan]:
    """Each upload (`.name`, `.data`) with its DICOM header when it is DICOM and readable (an
    unreadable one is refused by the decoder, with the reason)."""
    return [Scan(u.name, _header(u.data), u.data) for u in uploads]


def _header(data: bytes) -> Dataset | None:
    if scan_files.detect_format(data) != "dicom":
        return None
    import pydicom

    try:
        return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
    except Exception:  # pydicom raises many kinds; the decoder names the problem
        return None


@dataclass(frozen=True)
class HospitalRequest:
    """What a predict asks of hospital formats, checked before the model runs."""

    media_type: str
    scans: list[Scan]
    store: Pacs | None

    @classmethod
    def check(
        cls,
        scans: list[Scan],
        card: ModelCard,
        *,
        media_type: str,
        store: Pacs | None,
        allow_other_modality: bool,
    ) -> HospitalRequest:
        if not allow_other_modality:
            check_modality(scans, card)
        if media_type in FROM_SR or store is not None:
            check_one_study(dicom_only(scans))
        return cls(media_type, scans, store)

    def study_uids(self) -> set[str]:
        """The Study Instance UIDs of the request's DICOM scans (for the audit trail, which
        holds them only as salted hashes)."""
        found = (ScanUIDs.of(s.header).study_instance_uid for s in self.scans if s.header)
        return {uid for uid in found if uid}

    def answer(
        self, result: dict[str, Any], model: ModelIdentity, settings: ReportSettings
    ) -> tuple[bytes, str] | None:
        """The SR's, Bundle's or HL7 message's bytes and media type; None to answer `result`
        as JSON, to which each DICOM scan's UIDs (and the stored SR's) have been added."""
        predictions = result["predictions"]
        for prediction, scan in zip(predictions, self.scans, strict=True):
            if scan.header is not None:
                prediction["dicom"] = ScanUIDs.of(scan.header).as_json()
        results = [ScanResult.from_prediction(p) for p in predictions]
        if self.media_type in FROM_SR or self.store is not None:
            sr = _report(dicom_only(self.scans), results, model, settings)
            carried = self.store is not None or self.media_type != SR_MEDIA_TYPE  # one file
            maps = self._maps(predictions, model, settings) if carried else []
            if self.store is not None:
                self.store.store(sr, maps)
                result["report"] = ScanUIDs.of(sr).as_json()
                if maps:
                    result["report"]["attention_maps"] = [str(m.SOPInstanceUID) for m in maps]
            if self.media_type == SR_MEDIA_TYPE:
                return sr_bytes(sr), SR_MEDIA_TYPE
            if self.media_type == MULTIPART_DICOM:
                return multipart_dicom([sr_bytes(d) for d in (sr, *maps)])
            if self.media_type == HL7_MEDIA_TYPE:
                return _message(sr, maps), f"{HL7_MEDIA_TYPE}; charset=utf-8"
        if self.media_type == FHIR_MEDIA_TYPE:
            uids = [ScanUIDs.of(s.header) if s.header is not None else None for s in self.scans]
            subject = Subject.common([s.header for s in self.scans if s.header is not None])
            bundle = build_bundle(uids, results, model, settings, subject)
            add_maps(bundle, self._maps(predictions, model, settings), create=False)
            return bundle.model_dump_json().encode(), FHIR_MEDIA_TYPE
        return None

    def _maps(
        self, predictions: list[dict[str, Any]], model: ModelIdentity, settings: ReportSettings
    ) -> list[Dataset]:
        """The attention map of each DICOM scan that has one (an `explain=true` predict:
        `service.hospital.attention_map`), as Secondary Captures in a new series of each
        study; none without `explain`, and none for a PNG or JPEG (its map is the JSON's)."""
        from service.hospital.attention_map import scan_map

        if not any(p.get("explanation") for p in predictions):
            return []
        series: dict[str, str] = {}
        maps: list[Dataset] = []
        for scan, prediction in zip(self.scans, predictions, strict=True):
            if scan.header is None:
                continue
            study = str(scan.header.get("StudyInstanceUID", ""))
            uids = (series.setdefault(study, new_uid(settings)), new_uid(settings))
            image = scan_map(
                scan.data, scan.header, prediction, model, uids, len(maps) + 1, settings
            )
            if image is not None:
                maps.append(image)
        return maps


def _report(
    sources: list[Dataset],
    results: list[ScanResult],
    model: ModelIdentity,
    settings: ReportSettings,
) -> Dataset:
    """The SR, or a 422 when a source's header cannot go into one: pydicom and highdicom
    name the offending value in their errors, so neither text reaches the client or logs."""
    try:
        return build_sr(sources, results, model, settings)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise Unprocessable(
            f"a DICOM SR cannot be built from these scans' headers ({type(exc).__name__})"
        ) from None


def _message(sr: Dataset, maps: Sequence[Dataset]) -> bytes:
    """The ORU^R01 of the SR (and its maps), or a 422 saying what the scans lack for one."""
    try:
        return build_oru(sr, maps=maps).encode()
    except NotReportable as exc:
        raise Unprocessable(f"no HL7 v2 result for these scans: {exc}") from None


def check_modality(scans: Sequence[Scan], card: ModelCard) -> None:
    """A 422 for the first DICOM scan of another modality than the model was trained on."""
    trained = card.intended_use.modality if card.intended_use else None
    if not trained:
        return
    allowed = accepted(trained)
    for scan in scans:
        if scan.header is None:
            continue
        modality = str(scan.header.get("Modality") or "none")
        if modality not in allowed:
            raise Unprocessable(
                f"{scan.name}: modality {modality}; model '{card.name}' was trained on"
                f" {trained} scans (add ?allow_other_modality=true to classify it anyway)",
                errors=[{"loc": scan.name, "msg": f"modality {modality}", "type": "modality"}],
            )


def dicom_only(scans: Sequence[Scan]) -> list[Dataset]:
    """The scans' headers, or a 422 naming the first scan that is not DICOM."""
    for scan in scans:
        if scan.header is None:
            raise Unprocessable(
                f"{scan.name} is not DICOM: a DICOM SR or HL7 v2 result references DICOM"
                " instances only (ask for application/json or application/fhir+json)",
                errors=[{"loc": scan.name, "msg": "not DICOM", "type": "dicom"}],
            )
    return [scan.header for scan in scans if scan.header is not None]


def sr_bytes(sr: Dataset) -> bytes:
    """The SR as a DICOM file (Part 10, with its file meta)."""
    out = io.BytesIO()
    sr.save_as(out, enforce_file_format=True)
    return out.getvalue()
