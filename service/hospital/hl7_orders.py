"""Orders from a RIS as HL7 v2 messages (parsed with hl7apy) and the acknowledgements the
node answers them with.

A RIS sends an order when an exam is ordered, scheduled or completed, and another with order
control CA (or DC, OC) when it is called off: ORM^O01 (v2.3 to 2.4, still the most common),
or OMI^O23, the imaging order of v2.5 on that IHE Radiology's Scheduled Workflow.b uses. What
the node needs of it is the order control (ORC-1) and the exam's accession number: an OMI's
IPC-1 (Accession Identifier) where it has one; else OBR-18 (placer field 1) as IHE Radiology
carries it in ORM, or the filler order number (OBR-3 or ORC-3) as many RIS do; the site says
which. Messages are read tolerantly (any 2.x version, segments without their groups): RIS
interfaces differ in what they fill, and only these fields matter here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from service.hospital.hl7v2 import escape

AccessionField = Literal["OBR-18", "OBR-3", "ORC-3"]
CANCELS = frozenset({"CA", "DC", "OC"})
"""Order controls that call an order off: cancel, discontinue, order cancelled."""
ORDER_TYPES = ("ORM^O01", "OMI^O23")
ACK_VERSION = "2.5.1"
ACCESSION_LENGTH = 16  # DICOM's Accession Number is SH: what the PACS is asked for by it


class Refused(Exception):
    """The message is not an order the node can take: AR (not an order at all) or AE (an
    order without what the node needs). The text names no patient data."""

    def __init__(self, code: Literal["AR", "AE"], why: str, header: Header | None = None):
        super().__init__(why)
        self.code, self.header = code, header


@dataclass(frozen=True)
class Header:
    """What the acknowledgement answers: the sender, the message's control ID, its mode."""

    sending_application: str
    sending_facility: str
    control_id: str
    processing_id: str
    trigger: str = ""  # the message's trigger event (MSH-9.2), which the ACK's MSH-9 repeats


@dataclass(frozen=True)
class Order:
    header: Header
    control: str
    accession: str

    @property
    def cancels(self) -> bool:
        return self.control in CANCELS


@dataclass(frozen=True)
class Parsed:
    """A message read tolerantly: its header, its type ("ORM^O01"), its segments in order."""

    header: Header
    kind: str
    segments: list[Any]

    def first(self, name: str) -> Any | None:
        return next((s for s in self.segments if s.name == name), None)


def read_message(data: bytes) -> Parsed:
    """Any HL7 v2 message in `data` (ER7), its segments without their groups; Refused (AR)
    when it cannot be read."""
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.exceptions import HL7apyException
    from hl7apy.parser import parse_message

    text = data.decode("latin-1").replace("\r\n", "\r").replace("\n", "\r").strip("\r")
    try:
        msg = parse_message(text, validation_level=VALIDATION_LEVEL.TOLERANT, find_groups=False)
        segments = list(msg.children)
        msh = next(s for s in segments if s.name == "MSH")
        kind = "^".join(msh.msh_9.to_er7().split("^")[:2])
        header = Header(
            sending_application=msh.msh_3.to_er7(),
            sending_facility=msh.msh_4.to_er7(),
            control_id=msh.msh_10.to_er7(),
            processing_id=msh.msh_11.to_er7() or "P",
            trigger=kind.partition("^")[2],
        )
    except (HL7apyException, StopIteration, IndexError, ValueError, UnicodeError):
        raise Refused("AR", "not a readable HL7 v2 message") from None
    return Parsed(header, kind, segments)


def read_order(data: bytes, field: AccessionField = "OBR-18") -> Order:
    """The order (ORM^O01 or OMI^O23) in `data` (ER7); Refused when it is none, or names no
    accession number."""
    return order_of(read_message(data), field)


def order_of(parsed: Parsed, field: AccessionField) -> Order:
    header, kind = parsed.header, parsed.kind
    if kind not in ORDER_TYPES:
        taken = " and ".join(ORDER_TYPES)
        raise Refused(
            "AR", f"message type {kind or '(none)'} is not taken here ({taken} are)", header
        )
    orc = parsed.first("ORC")
    if orc is None:
        raise Refused("AE", "the order has no ORC segment", header)
    return Order(header, orc.orc_1.to_er7().strip().upper(), accession_of(parsed, field, "order"))


def accession_of(parsed: Parsed, field: AccessionField, what: str) -> str:
    """The exam's accession number: an OMI's IPC-1 where it has one, else `field`; Refused
    (AE) when there is none, or one DICOM cannot hold. `what` names the message in the text."""
    ipc = parsed.first("IPC") if parsed.kind == "OMI^O23" else None
    if ipc is not None and _first(ipc, "ipc_1"):
        return checked_accession(_first(ipc, "ipc_1"), "IPC-1", what, parsed.header)
    segment = parsed.first("OBR" if field.startswith("OBR") else "ORC")
    return accession_in(segment, field, what, parsed.header)


def accession_in(segment: Any | None, field: AccessionField, what: str, header: Header) -> str:
    """The accession number in `field` of `segment` (its OBR or ORC); Refused as
    `accession_of`."""
    accession = _first(segment, field.lower().replace("-", "_")) if segment else ""
    return checked_accession(accession, field, what, header)


def checked_accession(accession: str, where: str, what: str, header: Header) -> str:
    if not accession:
        raise Refused("AE", f"the {what} has no accession number in {where}", header)
    if len(accession) > ACCESSION_LENGTH or "\\" in accession:  # not a DICOM SH value
        raise Refused("AE", f"the accession number in {where} is not one DICOM can hold", header)
    return accession


def _first(segment: Any, field: str) -> str:
    """A field's first component, stripped: 'ACC-9' of 'ACC-9^HOSP'."""
    text: str = getattr(segment, field).to_er7()
    return text.split("^")[0].strip()


def build_ack(header: Header | None, code: str, why: str = "") -> bytes:
    """The general acknowledgement (ACK) of a message: MSA-1 `code`, MSA-2 its control ID,
    MSA-3 and an ERR segment saying why when it is not AA."""
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.core import Message

    ack = Message("ACK", version=ACK_VERSION, validation_level=VALIDATION_LEVEL.TOLERANT)
    ack.msh.msh_3 = "SCANTUNE"
    if header is not None:
        if header.sending_application:
            ack.msh.msh_5 = header.sending_application
        if header.sending_facility:
            ack.msh.msh_6 = header.sending_facility
    ack.msh.msh_7 = datetime.now(UTC).strftime("%Y%m%d%H%M%S+0000")
    # The trigger event of the message answered (an unreadable one has none to repeat).
    ack.msh.msh_9 = f"ACK^{header.trigger if header is not None else ''}^ACK"
    control = header.control_id if header is not None else ""
    ack.msh.msh_10 = "A" + hashlib.sha256(f"{control}{code}".encode()).hexdigest()[:19].upper()
    ack.msh.msh_11 = (header.processing_id if header is not None else "") or "P"
    ack.msa.msa_1 = code
    if control:
        ack.msa.msa_2 = control
    if why:
        ack.msa.msa_3 = escape(why)[:80]
        err = ack.add_segment("ERR")
        unsupported = "200^Unsupported message type^HL70357"
        err.err_3 = "207^Application internal error^HL70357" if code == "AE" else unsupported
        err.err_4 = "E"
        err.err_8 = escape(why)
    return (str(ack.to_er7()) + "\r").encode()
