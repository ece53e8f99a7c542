"""The RIS's final reports (HL7 v2 ORU^R01) read for what the radiologist found, coded, and
matched to a model's classes: the confirmed outcome of the scans the node classified.

A RIS (or the reporting system behind it) sends the signed report of an exam as an ORU^R01:
OBR-25 says whether it is final (F) or a correction of one (C), the accession number is where
the site's orders carry it (`service.hospital.hl7_orders`), and the findings a coding
reporting template captures are OBX segments of a coded type (CWE, CE, CNE, CF) whose OBX-5
holds the code (component 1, its coding system in 3, an alternate code in 4 and 6). Free
text is not read: what a sentence means is not decided here. A site maps codes to classes
(`SCANTUNE_DICOM_OUTCOME_CODES`); an entry is `CODE` (in any system) or `SYSTEM|CODE`.

One ORU may report several exams (a radiologist reads a chest X-ray and its follow-up
together): each ORDER_OBSERVATION group, an optional ORC then an OBR and the OBX after it, is
a report of its own; an ORC-3 accession number is read from the group's ORC, else the last
one before it. Groups naming the same exam are one report of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from service.hospital.hl7_orders import (
    AccessionField,
    Header,
    Parsed,
    Refused,
    accession_in,
)

REPORT_TYPE = "ORU^R01"
FINAL_STATUSES = frozenset({"F", "C"})  # final, corrected; P (preliminary) and others wait
CODED_TYPES = frozenset({"CWE", "CE", "CNE", "CF"})


@dataclass(frozen=True)
class Report:
    header: Header
    accession: str
    status: str  # OBR-25, upper case
    codes: frozenset[str]  # each coded finding as CODE and as SYSTEM|CODE

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES


def reports_of(parsed: Parsed, field: AccessionField) -> list[Report]:
    """The reports in an ORU^R01 already read (`hl7_orders.read_message`), one an exam in the
    order the message names them; Refused (AE), keeping none, when it has no OBR or a group
    names no accession number."""
    groups = _groups(parsed.segments)
    if not groups:
        raise Refused("AE", "the report has no OBR segment", parsed.header)
    found: dict[str, Report] = {}
    for orc, obr, observations in groups:
        segment = obr if field.startswith("OBR") else orc
        accession = accession_in(segment, field, "report", parsed.header)
        codes: set[str] = set()
        for obx in observations:
            if obx.obx_2.to_er7().strip().upper() in CODED_TYPES:
                for value in obx.obx_5:  # each repetition: several findings
                    codes.update(_codes(value.to_er7().split("^")))
        status = obr.obr_25.to_er7().strip().upper()
        if accession in found:  # another procedure of the same exam: one report of it
            first = found[accession]
            status, codes = first.status, codes | first.codes
        found[accession] = Report(parsed.header, accession, status, frozenset(codes))
    return list(found.values())


def _groups(segments: list[Any]) -> list[tuple[Any | None, Any, list[Any]]]:
    """Each OBR with the ORC that applies to it and the OBX after it (segments not grouped,
    as `read_message` reads them)."""
    groups: list[tuple[Any | None, Any, list[Any]]] = []
    orc = None
    for segment in segments:
        if segment.name == "ORC":
            orc = segment
        elif segment.name == "OBR":
            groups.append((orc, segment, []))
        elif segment.name == "OBX" and groups:
            groups[-1][2].append(segment)
    return groups


def _codes(parts: list[str]) -> Iterable[str]:
    """CODE and SYSTEM|CODE of a coded value's identifier (components 1 and 3) and of its
    alternate identifier (4 and 6)."""
    for code_at, system_at in ((0, 2), (3, 5)):
        code = parts[code_at].strip() if len(parts) > code_at else ""
        system = parts[system_at].strip() if len(parts) > system_at else ""
        if code:
            yield code
            if system:
                yield f"{system}|{code}"


def classes_named(classes: Mapping[str, Iterable[str]], codes: frozenset[str]) -> set[str]:
    """The classes (`{class: [CODE or SYSTEM|CODE, ...]}`) whose codes the report names: one
    is the exam's outcome; none, or two (a person decides), is no outcome."""
    return {label for label, entries in classes.items() if codes & set(entries)}
