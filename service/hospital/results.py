"""What the report builders take: the model that classified, and each scan's result."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from models.card import ClassCode, ModelCard

DEFAULT_DISCLAIMER = "Result of an automated algorithm (scantune); not for diagnostic use."


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
    """One scan's answer: the reported class and the calibrated probability of each class."""

    label: str
    probabilities: Mapping[str, float]

    @property
    def probability(self) -> float:
        """The calibrated probability of the reported class."""
        return float(self.probabilities[self.label])

    @classmethod
    def from_prediction(cls, prediction: Mapping[str, Any]) -> ScanResult:
        """From one entry of the v1 JSON answer's `predictions`."""
        return cls(prediction["label"], dict(prediction["probabilities"]))


@dataclass(frozen=True)
class ReportSettings:
    """How this deployment writes reports (from `InferenceSettings` or the DICOM node's)."""

    uid_root: str | None = None
    """Prefix of new UIDs, without the trailing dot; None: UUID-derived 2.25 UIDs."""
    disclaimer: str | None = DEFAULT_DISCLAIMER
    """A statement that the result is not for diagnostic use; None or empty: none."""
    manufacturer: str = "scantune"
    series_number: int = 9901
