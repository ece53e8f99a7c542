"""The DICOM node's FHIR: an SR rendered as a transaction Bundle that fhir.resources parses
back, each entry a conditional create on an identifier the SR fixes."""

from __future__ import annotations

from typing import Any

import pydicom
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation

from service.hospital.fhir_transaction import transaction_from_sr
from service.hospital.sr_findings import NotReportable
from tests.hospital.test_hl7v2 import MODEL, _sources, _sr


def _parsed(sr: pydicom.Dataset) -> Bundle:
    return Bundle.model_validate_json(transaction_from_sr(sr).model_dump_json())


def _tracking_uids(item: Any) -> list[str]:
    """Every Tracking Unique Identifier (DCM 112040) in the SR, in document order."""
    found = []
    for child in item.get("ContentSequence", []):
        names = child.get("ConceptNameCodeSequence") or []
        if names and names[0].CodeValue == "112040":
            found.append(str(child.UID))
        found.extend(_tracking_uids(child))
    return found


def test_each_resource_is_created_once_by_an_identifier_the_sr_fixes() -> None:
    sources = _sources()
    sr = _sr(sources)
    bundle = _parsed(sr)
    assert bundle.type == "transaction"
    kinds = [e.resource.get_resource_type() for e in bundle.entry]
    assert kinds == ["DiagnosticReport", "Device", "Observation", "Observation"]
    identifiers = []
    for entry in bundle.entry:
        (identifier,) = entry.resource.identifier
        assert (entry.request.method, entry.request.url) == ("POST", kinds[len(identifiers)])
        assert entry.request.ifNoneExist == f"identifier={identifier.system}|{identifier.value}"
        identifiers.append(identifier.value)
    tracking = _tracking_uids(sr)
    assert len(tracking) == 2
    assert identifiers == [
        f"urn:oid:{sr.SOPInstanceUID}",
        MODEL.onnx_sha256,
        *(f"urn:oid:{uid}" for uid in tracking),
    ]
    again = _parsed(sr)  # sent again: the same identifiers, so the server creates nothing
    assert [e.request.ifNoneExist for e in again.entry] == [
        e.request.ifNoneExist for e in bundle.entry
    ]


def test_the_observations_say_what_the_sr_says() -> None:
    sources = _sources()
    bundle = _parsed(_sr(sources))
    (report,) = [e.resource for e in bundle.entry if isinstance(e.resource, DiagnosticReport)]
    (device,) = [e.resource for e in bundle.entry if isinstance(e.resource, Device)]
    observations = [e.resource for e in bundle.entry if isinstance(e.resource, Observation)]
    assert report.status == "preliminary" and report.subject.identifier.value == "FIXTURE-0001"
    assert report.basedOn[0].identifier.value == "A1"
    assert "Not for diagnosis." in report.conclusion and "chest-xray version 3" in report.conclusion
    assert device.manufacturer == "scantune"
    assert [o.valueCodeableConcept.coding[0].code for o in observations] == ["normal", "233604007"]
    # Only the reported class's probability: the SR holds no other; the exact doubles.
    assert [[float(c.valueQuantity.value) for c in o.component] for o in observations] == [
        [0.8125],
        [0.9999999],
    ]
    assert [o.derivedFrom[0].display for o in observations] == [
        f"SOP Instance UID {ds.SOPInstanceUID}" for ds in sources
    ]
    assert {o.subject.identifier.value for o in observations} == {"FIXTURE-0001"}


def test_an_sr_that_does_not_name_its_model_is_not_reportable() -> None:
    sr = _sr(_sources())

    def drop(item: Any, code: str) -> None:
        kept = [
            child
            for child in item.get("ContentSequence", [])
            if not (child.get("ConceptNameCodeSequence") or [None])[0]
            or child.ConceptNameCodeSequence[0].CodeValue != code
        ]
        if "ContentSequence" in item:
            item.ContentSequence = kept
        for child in kept:
            drop(child, code)

    drop(sr, "111002")  # Algorithm Parameters: the ONNX sha256
    with pytest.raises(NotReportable, match="does not name its model"):
        transaction_from_sr(sr)
    drop(sr, "125007")  # every measurement group
    with pytest.raises(NotReportable, match="no finding"):
        transaction_from_sr(sr)
