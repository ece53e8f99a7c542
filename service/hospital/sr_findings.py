"""The results in a DICOM SR as `service.hospital.sr` writes it (TID 1500), read back for the
formats rendered from the SR: HL7 v2 (`service.hospital.hl7v2`) and the DICOM node's FHIR
transaction (`service.hospital.fhir_transaction`). The node keeps only the SR of a result, so
these formats can say only what the SR says.

Read with pydicom: highdicom's `find_content_items` builds an object of every item it looks
at, which cost most of a second for a 50-scan report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydicom import Dataset

# Concepts as (code value, meaning, coding scheme designator): HL7's CWE order, in which
# hl7v2 writes FINDING and SOURCE; items are matched on value and scheme.
GROUP = ("125007", "Measurement Group", "DCM")
COMMENT = ("121106", "Comment", "DCM")
FINDING = ("121071", "Finding", "DCM")
SOURCE = ("121112", "Source of Measurement", "DCM")  # the scan, by its SOP Instance UID
TRACKING_UID = ("112040", "Tracking Unique Identifier", "DCM")
ALGORITHM_NAME = ("111001", "Algorithm Name", "DCM")
ALGORITHM_VERSION = ("111003", "Algorithm Version", "DCM")
ALGORITHM_PARAMETERS = ("111002", "Algorithm Parameters", "DCM")


class NotReportable(ValueError):
    """The SR lacks what a format must carry (its text names no patient data)."""


@dataclass(frozen=True)
class Finding:
    """One measurement group of the SR: a scan's reported class and its probability."""

    sop_class_uid: str
    sop_instance_uid: str
    code: tuple[str, str, str]  # value, meaning, scheme: HL7's CWE order
    probability: float | None
    algorithm_name: str
    algorithm_version: str
    algorithm_parameters: tuple[str, ...] = ()
    tracking_uid: str | None = None
    notes: tuple[str, ...] = ()  # the group's comments: what the input check said of the scan

    @property
    def algorithm(self) -> str:
        """ "NAME version VERSION", as far as the SR names them."""
        return " version ".join(filter(None, [self.algorithm_name, self.algorithm_version]))

    def parameter(self, name: str) -> str | None:
        """The value of an algorithm parameter written `name=value`."""
        for text in self.algorithm_parameters:
            key, sep, value = text.partition("=")
            if sep and key == name:
                return value
        return None


def read_findings(sr: Dataset) -> list[Finding]:
    """The SR's measurement groups that name a finding and its scan, in document order."""
    found = []
    for group in _items(sr, GROUP, recursive=True):
        codes = [i for i in _items(group, FINDING) if i.get("ConceptCodeSequence")]
        sources = [i for i in _items(group, SOURCE) if i.get("ReferencedSOPSequence")]
        if not codes or not sources:
            continue
        code = codes[0].ConceptCodeSequence[0]
        source = sources[0].ReferencedSOPSequence[0]
        tracking = [str(i.UID) for i in _items(group, TRACKING_UID) if i.get("UID")]
        found.append(
            Finding(
                sop_class_uid=str(source.ReferencedSOPClassUID),
                sop_instance_uid=str(source.ReferencedSOPInstanceUID),
                code=(str(code.CodeValue), str(code.CodeMeaning), str(code.CodingSchemeDesignator)),
                probability=_probability(group),
                algorithm_name=_text(group, ALGORITHM_NAME),
                algorithm_version=_text(group, ALGORITHM_VERSION),
                algorithm_parameters=tuple(
                    str(i.TextValue) for i in _items(group, ALGORITHM_PARAMETERS)
                ),
                tracking_uid=tracking[0] if tracking else None,
                notes=tuple(str(i.TextValue) for i in _items(group, COMMENT)),
            )
        )
    return found


def statements(sr: Dataset) -> list[str]:
    """The report's comments as plain text, for formats without a place for them per scan:
    those outside the measurement groups (the statement that the result is automated), in
    order, then each group's, named by the scan's place among them ("Scan 2 of 3: ...")
    when there are several (the HL7 message's OBX sub-ID)."""
    findings = read_findings(sr)
    named = [
        f"Scan {i} of {len(findings)}: {note}" if len(findings) > 1 else note
        for i, finding in enumerate(findings, start=1)
        for note in finding.notes
    ]
    return [*report_statements(sr), *named]


def report_statements(sr: Dataset) -> list[str]:
    """The comments outside the measurement groups, in order: what the report says as a
    whole (the statement that the result is automated), for formats that give each scan's
    notes (`Finding.notes`) a place of their own. An SR written before the groups held their
    scan's notes has those here too, already named by place."""
    return _comments_outside_groups(sr)


def _comments_outside_groups(container: Any) -> list[str]:
    found = []
    for item in container.get("ContentSequence", []):
        if _named(item, COMMENT):
            found.append(str(item.TextValue))
        elif not _named(item, GROUP):
            found.extend(_comments_outside_groups(item))
    return found


def probability_concept() -> tuple[str, str, str]:
    """The probability measurement's concept as `service.hospital.sr` writes it, in CWE order.
    Imported here, not at the top: the CLI imports hl7v2's media type, and sr brings pydantic."""
    from service.hospital.sr import PROBABILITY

    value, scheme, meaning = PROBABILITY
    return value, meaning, scheme


def _items(container: Any, concept: tuple[str, ...], *, recursive: bool = False) -> list[Any]:
    """The content items in `container` (or, `recursive`, anywhere below it) whose concept
    name is `concept`, in document order."""
    found = []
    for item in container.get("ContentSequence", []):
        if _named(item, concept):
            found.append(item)
        if recursive:
            found.extend(_items(item, concept, recursive=True))
    return found


def _named(item: Any, concept: tuple[str, ...]) -> bool:
    names = item.get("ConceptNameCodeSequence") or []
    if not names:
        return False
    name = names[0]
    return (str(name.CodeValue), str(name.CodingSchemeDesignator)) == (concept[0], concept[-1])


def _text(group: Any, concept: tuple[str, ...]) -> str:
    """The group's first text item of that concept; empty when none."""
    texts = [str(i.TextValue) for i in _items(group, concept)]
    return texts[0] if texts else ""


def _probability(group: Any) -> float | None:
    for item in _items(group, probability_concept()):
        for value in item.get("MeasuredValueSequence", []):
            exact = value.get("FloatingPointValue")
            return float(exact if exact is not None else value.NumericValue)
    return None
