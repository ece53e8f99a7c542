"""What the report builders take: the model that classified, and each scan's result."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from models.card import ClassCode, ModelCard

if TYPE_CHECKING:
    from pydicom import Dataset

DEFAULT_DISCLAIMER = "Result of an automated algorithm (scantune); not for diagnostic use."
ATYPICAL_NOTE = "The scan is unlike those the model was trained on; the result may not apply."
"""What a report says of a scan the input check flagged (`models.input_profile`)."""


@dataclass(frozen=True)
class ModelIdentity:
    """The algorithm a report names: model name, version, ONNX sha256 and coded classes."""

    name: str
    version: int
    onnx_sha256: str
    classes: tuple[str, ...]
    codes: tuple[ClassCode, ...]

    @classmethod
    def from_card(cls, card: ModelCard, version: int | None = None) -> ModelIdentity:
        chosen = version if version is not None else card.version
        if chosen is None:
            raise ValueError("the card has no version; give one")
        return cls(card.name, chosen, card.onnx_sha256, card.classes, card.coded_classes())

    def code_of(self, label: str) -> ClassCode:
        return self.codes[self.classes.index(label)]


@dataclass(frozen=True)
class ScanResult:
    """One scan's answer: the reported class and the calibrated probability of each class;
    `typical`: what the input check said of the scan (None: not checked)."""

    label: str
    probabilities: Mapping[str, float]
    typical: bool | None = None

    @property
    def probability(self) -> float:
        """The calibrated probability of the reported class."""
        return float(self.probabilities[self.label])

    @classmethod
    def from_prediction(cls, prediction: Mapping[str, Any]) -> ScanResult:
        """From one entry of the v1 JSON answer's `predictions`."""
        check = prediction.get("input_check")
        typical = None if check is None else bool(check["typical"])
        return cls(prediction["label"], dict(prediction["probabilities"]), typical)


@dataclass(frozen=True)
class ScanUIDs:
    """Where a DICOM scan sits: the UIDs callers match results by."""

    study_instance_uid: str | None
    series_instance_uid: str | None
    sop_instance_uid: str | None
    sop_class_uid: str | None = None

    @classmethod
    def of(cls, ds: Dataset) -> ScanUIDs:
        def uid(keyword: str) -> str | None:
            value = ds.get(keyword)
            return str(value) if value else None

        return cls(
            uid("StudyInstanceUID"),
            uid("SeriesInstanceUID"),
            uid("SOPInstanceUID"),
            uid("SOPClassUID"),
        )

    def as_json(self) -> dict[str, str | None]:
        """The three UIDs of the JSON answer's `dicom` member."""
        return {
            "study_instance_uid": self.study_instance_uid,
            "series_instance_uid": self.series_instance_uid,
            "sop_instance_uid": self.sop_instance_uid,
        }


@dataclass(frozen=True)
class Subject:
    """Whom and which order a request's scans belong to, as the EHR files results: the
    Patient ID (with its issuer) and the Accession Number, each only when every scan agrees."""

    patient_id: str | None
    issuer: str | None
    accession: str | None

    @classmethod
    def common(cls, headers: list[Dataset]) -> Subject | None:
        """What all `headers` share; None when they share nothing (or there are none)."""

        def shared(keyword: str) -> str | None:
            values = {str(h.get(keyword) or "").strip() for h in headers}
            if len(values) != 1:
                return None  # none, or scans that disagree: name none rather than guess
            return values.pop() or None

        patient = shared("PatientID")
        found = cls(
            patient, shared("IssuerOfPatientID") if patient else None, shared("AccessionNumber")
        )
        return found if found.patient_id or found.accession else None


@dataclass(frozen=True)
class ReportSettings:
    """How this deployment writes reports (from `InferenceSettings` or the DICOM node's)."""

    uid_root: str | None = None
    """Prefix of new UIDs, without the trailing dot; None: UUID-derived 2.25 UIDs."""
    disclaimer: str | None = DEFAULT_DISCLAIMER
    """A statement that the result is not for diagnostic use; None or empty: none."""
    manufacturer: str = "scantune"
    series_number: int = 9901
