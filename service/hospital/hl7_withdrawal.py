"""The HL7 v2.5.1 ORU^R01 that withdraws a result the node sent: when a model version is
recalled, each receiver must learn that what it filed from that model is void.

The withdrawal renders the same SR as the result (`service.hospital.hl7v2.build_oru`), with
the attention maps the result carried, so it names the same patient (PID), the same order
(ORC-3 and OBR-3 filler, OBR-18 placer field: the Accession Number) and the same observations,
row for row (OBX-1 set ID, OBX-3 identifier, OBX-4 sub-ID per scan, OBX-5 value): a receiver
finds what it filed, however it matches rows. Each OBX carries the value it had, marked
wrong, and the notes it had (a flagged scan's NTE after its finding); the order's first NTE
says why. The maps go again because the receiver already holds them: a map left out would
stay filed as valid, a picture of a finding that must not be used, and every row after it
would be numbered one less than the row it voids.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from service.hospital.hl7v2 import Envelope, ResultStatus, compose_oru
from service.hospital.sr_findings import report_statements

if TYPE_CHECKING:
    from pydicom import Dataset

WITHDRAWN_ORDER = "C"
"""OBR-25 (HL7 table 0123, result status): C, "Correction to results"."""
WITHDRAWN_OBSERVATION = "W"
"""OBX-11 (HL7 table 0085, observation result status): W, "Post original as wrong"."""


def withdrawal_control_id(sr: Dataset) -> str:
    """MSH-10 of the withdrawal: derived from the SR's SOP Instance UID, unlike `control_id(sr)`
    (the result's own message), so a receiver tells them apart and a resend repeats it."""
    seed = f"withdrawal:{sr.SOPInstanceUID}"
    return hashlib.sha256(seed.encode()).hexdigest()[:20].upper()


def build_withdrawal(
    sr: Dataset,
    envelope: Envelope = Envelope(),
    reason: str = "",
    maps: Sequence[Dataset] = (),
    map_max_bytes: int | None = None,
) -> str:
    """The ORU^R01 that voids the result of `sr` and the `maps` sent with it (as they were
    sent: the same `map_max_bytes`), `reason` (free text, escaped) in its first NTE as
    "Withdrawn: <reason>"; NotReportable as for build_oru.

    The codes, from the tables of HL7 v2.5.1:
    - OBX-11 "W", "Post original as wrong, e.g. transmitted for wrong patient" (table 0085):
      the one status that says the value filed before must not be used, while the receiver
      keeps it, marked, for the record. "D" ("Deletes the OBX record") would erase what a
      clinician may already have read, and "C" ("Record coming over is a correction") would
      need a right value to replace it, which a recall does not give. HL7's v2-to-FHIR map
      takes W to Observation.status entered-in-error, the status the FHIR withdrawal sends.
    - OBR-25 "C", "Correction to results" (table 0123): the order's results changed since
      they were sent, so a RIS or EHR processes the OBX rows again. Table 0123 has no
      "withdrawn"; "X" ("No results available; Order canceled") would cancel the imaging
      order itself, which stands: a radiologist still reads the study.
    OBR-22 (status change time) is the withdrawal's, later than the result's, so a receiver
    that orders updates by it takes this one last."""
    note = f"Withdrawn: {reason}" if reason.strip() else "Withdrawn"
    status = ResultStatus(
        WITHDRAWN_ORDER,
        WITHDRAWN_OBSERVATION,
        changed=datetime.now(UTC).strftime("%Y%m%d%H%M%S+0000"),
    )
    control = withdrawal_control_id(sr)
    notes = [note, *report_statements(sr)]  # each scan's notes stay with its finding
    return compose_oru(
        sr, envelope, control, status, notes=notes, maps=maps, map_max_bytes=map_max_bytes
    )
