"""HL7 v2.5.1 ORU^R01 result messages, built with hl7apy from the DICOM SR of a result.

Integration engines and most RIS and EHR interfaces take results as HL7 v2 ORU^R01 rather
than DICOM or FHIR. The message renders the SR `service.hospital.sr` builds: the same patient,
study, findings and statement, so the two formats cannot disagree, and the DICOM node, which
keeps only the SR of a result, can send either.

Segments: MSH; PID (Patient ID with its issuer, name, birth date and sex, from the SR's
Patient module); ORC (RE) and OBR (the Accession Number as filler order number and as placer
field 1, as IHE Radiology carries it; LOINC 18748-4 "Diagnostic imaging study"; the study's
date and time; result status P, preliminary); NTE (the statement that the result is
automated); an OBX with the Study Instance UID, then per scan (OBX-4 sub-ID = the scan's
number): the finding (CWE), its calibrated probability (NM) and the SOP Instance UID of the
scan (ST), each preliminary (OBX-11 P), the model in OBX-18. What the SR notes of a scan (the
input check's statement) is an NTE right after its finding's OBX: an NTE that follows an OBX
is a note on that observation, and the finding is what the statement qualifies. With the
series' attention maps, one more OBX per mapped scan (same sub-ID): the map as ED,
`^IM^JPEG^Base64^…` (JPEG, not PNG: HL7's table 0291 of data subtypes lists JPEG, and
engines render it).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from service.hospital.sr_findings import (
    FINDING,
    SOURCE,
    Finding,
    NotReportable,
    probability_concept,
    read_findings,
    report_statements,
)

if TYPE_CHECKING:
    from pydicom import Dataset

HL7_MEDIA_TYPE = "x-application/hl7-v2+er7"
"""The media type HL7 gives ER7 (pipe-delimited) messages."""
VERSION = "2.5.1"
# Concepts as HL7 writes a coded element: value, meaning, scheme (CWE components 1-3).
PROCEDURE = ("18748-4", "Diagnostic imaging study", "LN")
STUDY_UID = ("110180", "Study Instance UID", "DCM")
# A local code (HL7's "99" prefix): no standard one names a class activation map.
ATTENTION_MAP = ("attention-map", "Class activation map, not for diagnostic use", "99SCANTUNE")
ACCEPTED = {"AA", "CA"}
ED_PREFIX = "^IM^JPEG^Base64^"  # OBX-5 of a map: no source application, type, subtype, encoding
"""ACK codes meaning "taken": application accept, commit accept (enhanced mode)."""


@dataclass(frozen=True)
class Envelope:
    """MSH: who sends the message to whom, and whether it is production data."""

    sending_application: str = "SCANTUNE"
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    processing_id: str = "P"


@dataclass(frozen=True)
class Ack:
    """The receiver's answer: MSA-1 and the control ID it acknowledges (MSA-2)."""

    code: str
    control_id: str

    @property
    def accepted(self) -> bool:
        return self.code in ACCEPTED


@dataclass(frozen=True)
class ResultStatus:
    """OBR-25 (HL7 table 0123) and every OBX-11 (table 0085) of a message, and OBR-22 (when
    that status began, HL7 DTM; empty: the SR's content time)."""

    order: str
    observation: str
    changed: str = ""


PRELIMINARY = ResultStatus("P", "P")
"""An automated result: preliminary until a person reads the study."""


def control_id(sr: Dataset) -> str:
    """MSH-10 (20 characters in 2.5.1): derived from the SR's SOP Instance UID, so a result
    sent again carries the same ID and a receiver can tell it is the same message."""
    return hashlib.sha256(str(sr.SOPInstanceUID).encode()).hexdigest()[:20].upper()


def build_oru(
    sr: Dataset,
    envelope: Envelope = Envelope(),
    maps: Sequence[Dataset] = (),
    map_max_bytes: int | None = None,
) -> str:
    """The ORU^R01 of `sr` in ER7 (segments end with CR), with `maps` (the attention maps'
    Secondary Captures) as ED observations, each OBX-5 at most `map_max_bytes` (an engine's
    cap); NotReportable when the SR names no Patient ID (an HL7 result is filed by it) or
    holds no finding."""
    return compose_oru(
        sr, envelope, control_id(sr), PRELIMINARY, maps=maps, map_max_bytes=map_max_bytes
    )


def compose_oru(
    sr: Dataset,
    envelope: Envelope,
    control: str,
    status: ResultStatus,
    *,
    notes: Sequence[str] | None = None,
    maps: Sequence[Dataset] = (),
    map_max_bytes: int | None = None,
) -> str:
    """An ORU^R01 of `sr` with MSH-10 `control` and `status`, its order's NTEs `notes` (plain
    text; by default the SR's report-wide statements), each scan's notes after its finding:
    one builder for the result and for what later says of it
    (`service.hospital.hl7_withdrawal`), so both name the order and the observations alike.
    NotReportable as for build_oru."""
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.core import Message

    patient_id = str(sr.get("PatientID") or "").strip()
    if not patient_id:
        raise NotReportable("the scans have no Patient ID: an HL7 result is filed by it")
    findings = read_findings(sr)
    if not findings:
        raise NotReportable("the report holds no finding")
    msg = Message("ORU_R01", version=VERSION, validation_level=VALIDATION_LEVEL.TOLERANT)
    _header(msg, envelope, control)
    result = msg.add_group("ORU_R01_PATIENT_RESULT")
    _patient(result.add_group("ORU_R01_PATIENT").pid, sr, patient_id)
    order = result.add_group("ORU_R01_ORDER_OBSERVATION")
    made = _datetime(sr.get("ContentDate"), sr.get("ContentTime"))
    # OBR-22 is when the result's status last changed: the SR's time for the result itself.
    _order(order, sr, status.changed or made, status.order)
    _notes(order, report_statements(sr) if notes is None else notes)
    _observations(order, sr, findings, made, maps, map_max_bytes, status.observation)
    return str(msg.to_er7()) + "\r"


def parse_ack(data: bytes) -> Ack:
    """MSA-1 and MSA-2 of an acknowledgement in any HL7 v2 version; ValueError when there
    is no MSA segment to read."""
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.exceptions import HL7apyException
    from hl7apy.parser import parse_segment

    text = data.decode("utf-8", errors="replace")
    for line in text.replace("\n", "\r").split("\r"):
        if line.startswith("MSA"):
            try:
                msa = parse_segment(
                    line, version=VERSION, validation_level=VALIDATION_LEVEL.TOLERANT
                )
            except HL7apyException as exc:
                raise ValueError(f"unreadable MSA segment ({type(exc).__name__})") from None
            return Ack(str(msa.msa_1.value or ""), str(msa.msa_2.value or ""))
    raise ValueError("no MSA segment in the answer")


# --- segments --------------------------------------------------------------------------------


def _header(msg: Any, envelope: Envelope, control: str) -> None:
    msh = msg.msh
    _fill(msh, 3, escape(envelope.sending_application))
    _fill(msh, 4, escape(envelope.sending_facility))
    _fill(msh, 5, escape(envelope.receiving_application))
    _fill(msh, 6, escape(envelope.receiving_facility))
    _fill(msh, 7, datetime.now(UTC).strftime("%Y%m%d%H%M%S+0000"))
    _fill(msh, 9, "ORU^R01^ORU_R01")
    _fill(msh, 10, control)
    _fill(msh, 11, escape(envelope.processing_id))
    _fill(msh, 18, "UNICODE UTF-8")


def _patient(pid: Any, sr: Dataset, patient_id: str) -> None:
    issuer = str(sr.get("IssuerOfPatientID") or "")
    _fill(pid, 1, "1")
    _fill(pid, 3, _parts(patient_id, "", "", issuer))
    name = sr.get("PatientName")
    if name:
        # DICOM PN and HL7 XPN share their first five components' order: family, given,
        # middle, prefix, suffix.
        _fill(pid, 5, _parts(*str(name).split("=")[0].split("^")[:5]))
    _fill(pid, 7, escape(sr.get("PatientBirthDate") or ""))
    sex = str(sr.get("PatientSex") or "")
    _fill(pid, 8, sex if sex in {"M", "F", "O"} else "U")


def _order(order: Any, sr: Dataset, changed: str, status: str) -> None:
    accession = escape(sr.get("AccessionNumber") or "")
    _fill(order.orc, 1, "RE")
    _fill(order.orc, 3, accession)
    obr = order.obr
    _fill(obr, 1, "1")
    _fill(obr, 3, accession)
    _fill(obr, 4, _parts(*PROCEDURE))
    _fill(obr, 7, _datetime(sr.get("StudyDate"), sr.get("StudyTime")))
    _fill(obr, 18, accession)
    _fill(obr, 22, changed)
    _fill(obr, 24, "RAD")
    _fill(obr, 25, status)


def _observations(
    order: Any,
    sr: Dataset,
    findings: list[Finding],
    made: str,
    maps: Sequence[Dataset],
    map_max_bytes: int | None,
    status: str,
) -> None:
    """The OBX rows, each of OBX-11 `status`: the study, then each scan's finding (with its
    notes), probability, SOP Instance UID and attention map (if it has one, and it fits in
    `map_max_bytes` of OBX-5)."""
    # concept, type, sub-ID, value, units, notes (each an NTE after the OBX)
    rows: list[tuple[tuple[str, str, str], str, str, str, str, tuple[str, ...]]] = [
        (STUDY_UID, "ST", "", escape(sr.StudyInstanceUID), "", ())
    ]
    probability = probability_concept()
    mapped = {str(m.SourceImageSequence[0].ReferencedSOPInstanceUID): m for m in maps}
    for number, found in enumerate(findings, start=1):
        sub = str(number)
        rows.append((FINDING, "CWE", sub, _parts(*found.code), "", found.notes))
        if found.probability is not None:
            unit = "1^no units^UCUM"
            rows.append((probability, "NM", sub, _number(found.probability), unit, ()))
        rows.append((SOURCE, "ST", sub, escape(found.sop_instance_uid), "", ()))
        image = mapped.get(found.sop_instance_uid)
        encoded = _encoded_map(image, map_max_bytes) if image is not None else None
        if encoded is not None:
            rows.append((ATTENTION_MAP, "ED", sub, encoded, "", ()))
    model = _parts(findings[0].algorithm, "SCANTUNE") if findings[0].algorithm else ""
    for set_id, (concept, kind, sub, value, units, notes) in enumerate(rows, start=1):
        observation = order.add_group("ORU_R01_OBSERVATION")
        obx = observation.obx
        for field, text in enumerate((str(set_id), kind, _parts(*concept), sub, value, units), 1):
            _fill(obx, field, text)
        _fill(obx, 11, status)
        _fill(obx, 14, made)
        _fill(obx, 18, model)
        _notes(observation, notes)  # the NTEs after an OBX are notes on it


def _encoded_map(image: Dataset, map_max_bytes: int | None) -> str | None:
    """OBX-5 of a map: its JPEG in base64 (which holds no HL7 delimiter); None when it does
    not fit in `map_max_bytes` even small (left out)."""
    from service.hospital.attention_map import encoded_map, fitted_map

    jpeg = (
        encoded_map(image, "JPEG")
        if map_max_bytes is None
        else fitted_map(image, map_max_bytes - len(ED_PREFIX))
    )
    return None if jpeg is None else ED_PREFIX + base64.b64encode(jpeg).decode()


def _notes(group: Any, texts: Sequence[str]) -> None:
    """An NTE per text (plain, escaped here), numbered from 1, at the end of `group`: the
    order's, or an observation's."""
    for number, text in enumerate(texts, start=1):
        nte = group.add_segment("NTE")
        _fill(nte, 1, str(number))
        _fill(nte, 3, escape(text))


def _fill(segment: Any, field: int, value: str) -> None:
    """Set a field from ER7 text (already escaped); an empty value leaves it out."""
    if value:
        setattr(segment, f"{segment.name.lower()}_{field}", value)


def _datetime(date: object, time: object) -> str:
    """DICOM DA + TM as HL7 DTM (YYYYMMDD[HHMM[SS]]); empty without a date."""
    day = str(date or "")
    if not day:
        return ""
    clock = str(time or "").split(".")[0]
    return escape(day + clock[:6])


def _number(value: float) -> str:
    """NM: the shortest decimal that reads back as the same double, never in exponent form."""
    import numpy as np

    return str(np.format_float_positional(value, trim="-"))


def _parts(*values: object) -> str:
    """Components joined by `^`, each escaped; trailing empty ones dropped."""
    return "^".join(escape(v) for v in values).rstrip("^")


def escape(value: object) -> str:
    """`value` as HL7 text: control characters (a segment ends at CR) become spaces and the
    delimiters are escaped. By hand: hl7apy escapes only values it holds as data types, and
    there it leaves a backslash that precedes a letter of an escape sequence as it is (so
    "E\\F" would be read back as something else)."""
    text = "".join(" " if ord(c) < 32 or ord(c) == 127 else c for c in str(value))
    for char, code in (("\\", "E"), ("|", "F"), ("^", "S"), ("&", "T"), ("~", "R")):
        text = text.replace(char, f"\\{code}\\")  # the escape character first
    return text
