"""Orders as a RIS sends them (HL7 v2 ORM^O01, and OMI^O23 as IHE Scheduled Workflow.b has it)
read for their order control and accession number, and the acknowledgements the node answers
with, read back by hl7apy with strict validation and by python-hl7, a second implementation."""

from __future__ import annotations

import re

import hl7
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from service.hospital.hl7_orders import Refused, build_ack, read_order


def orm(control: str = "NW", obr18: str = "RIS-2046", version: str = "2.5.1") -> bytes:
    segments = [
        f"MSH|^~\\&|RIS|HOSP|SCANTUNE|HOSP|20261206120000||ORM^O01^ORM_O01|MSG-1|P|{version}",
        "PID|1||P-1^^^HOSP^MR||Doe^Jane",
        f"ORC|{control}|PL-1|FL-77||CM",
        f"OBR|1|PL-1|FL-77|CXR^Chest X-ray|||20261206110000|||||||||||{obr18}",
    ]
    return "\r".join(segments).encode() + b"\r"


def omi(control: str = "NW", ipc1: str = "ACC-9^HOSP", obr18: str = "") -> bytes:
    """An IHE RAD-4 Procedure Scheduled (v2.5.1): the accession number in IPC-1."""
    segments = [
        "MSH|^~\\&|RIS|HOSP|SCANTUNE|HOSP|20261206120000||OMI^O23^OMI_O23|MSG-2|P|2.5.1",
        "PID|1||P-1^^^HOSP^MR||Doe^Jane",
        "PV1|1|O",
        f"ORC|{control}|PL-1|FL-77||SC",
        "TQ1|1||||||20261206110000",
        f"OBR|1|PL-1|FL-77|CXR^Chest X-ray|||20261206110000|||||||||||{obr18}",
        f"IPC|{ipc1}|RP-1|1.2.826.0.1.3680043.99.1^^RIS^DICOM|SPS-1|CR",
    ]
    return "\r".join(segments).encode() + b"\r"


def test_an_imaging_order_gives_the_accession_number_in_its_ipc_segment() -> None:
    order = read_order(omi())
    assert (order.control, order.accession, order.header.trigger) == ("NW", "ACC-9", "O23")
    assert read_order(omi("CA")).cancels
    # an OMI without IPC-1 is read where the site keeps the number, as an ORM is
    assert read_order(omi(ipc1="", obr18="RIS-7")).accession == "RIS-7"
    assert read_order(omi(ipc1=""), "OBR-3").accession == "FL-77"
    with pytest.raises(Refused, match="no accession number in OBR-18"):
        read_order(omi(ipc1=""))
    with pytest.raises(Refused, match="the accession number in IPC-1 is not one DICOM"):
        read_order(omi(ipc1="A" * 17))
    accepted = build_ack(order.header, "AA").decode()
    assert parse_message(accepted, validation_level=VALIDATION_LEVEL.STRICT).validate()
    msg = hl7.parse(accepted)
    assert str(msg.segment("MSH")[9]) == "ACK^O23^ACK" and str(msg["MSA.F2"]) == "MSG-2"


def test_an_order_gives_its_control_and_accession_number_where_the_site_keeps_it() -> None:
    order = read_order(orm())
    assert (order.control, order.accession, order.cancels) == ("NW", "RIS-2046", False)
    assert (order.header.sending_application, order.header.control_id) == ("RIS", "MSG-1")
    assert read_order(orm(), "OBR-3").accession == "FL-77"  # the filler order number
    assert read_order(orm(), "ORC-3").accession == "FL-77"
    assert read_order(orm("ca", version="2.3.1")).cancels  # any 2.x, any case
    assert read_order(orm().replace(b"\r", b"\n")).accession == "RIS-2046"  # LF-separated


@pytest.mark.parametrize(
    ("message", "code", "why"),
    [
        (orm().replace(b"ORM^O01^ORM_O01", b"ADT^A01^ADT_A01"), "AR", "ADT^A01 is not taken"),
        (orm().replace(b"ORM^O01^ORM_O01", b"ORU^R01^ORU_R01"), "AR", "(ORM^O01 and OMI^O23 are)"),
        (b"hello", "AR", "not a readable HL7 v2 message"),
        (orm(obr18=""), "AE", "no accession number in OBR-18"),
        (orm(obr18="R" * 17), "AE", "not one DICOM can hold"),
        (orm().split(b"ORC")[0], "AE", "no ORC segment"),
    ],
)
def test_what_is_not_an_order_the_node_can_take_says_why(
    message: bytes, code: str, why: str
) -> None:
    with pytest.raises(Refused, match=re.escape(why)) as refused:
        read_order(message)
    assert refused.value.code == code


def test_acknowledgements_are_valid_2_5_1_acks_of_the_message() -> None:
    header = read_order(orm()).header
    accepted = build_ack(header, "AA").decode()
    strict = parse_message(accepted, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    assert strict.validate()
    msg = hl7.parse(accepted)
    assert (str(msg["MSA.F1"]), str(msg["MSA.F2"]), str(msg["MSH.F5"])) == ("AA", "MSG-1", "RIS")
    assert str(msg.segment("MSH")[9]) == "ACK^O01^ACK" and "ERR" not in accepted
    refused = build_ack(header, "AE", "the order has no accession number in OBR-18").decode()
    assert parse_message(refused, validation_level=VALIDATION_LEVEL.STRICT).validate()
    msg = hl7.parse(refused)
    assert str(msg["MSA.F1"]) == "AE" and "accession number" in str(msg["ERR.F8"])
    anonymous = hl7.parse(build_ack(None, "AR", "not a readable HL7 v2 message").decode())
    assert str(anonymous["MSA.F1"]) == "AR" and str(anonymous["MSA.F2"]) == ""
    assert str(anonymous.segment("MSH")[9]) == "ACK^^ACK"  # no trigger event to repeat
