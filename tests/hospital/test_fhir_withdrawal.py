"""The FHIR transaction that withdraws a result: parsed back by fhir.resources (R4B), the
resources the result created marked entered-in-error by conditional updates on the very
identifiers the result's conditional creates used."""

from __future__ import annotations

from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle

from service.hospital.fhir_transaction import transaction_from_sr, withdrawal_from_sr
from service.hospital.sr_findings import NotReportable
from tests.hospital.test_hl7_withdrawal import NASTY, maps_of
from tests.hospital.test_hl7v2 import _sources, _sr

WITHDRAWN = {"DiagnosticReport", "Observation", "Media"}


def _parsed(bundle: Bundle) -> Bundle:
    """The bundle as a server reads it: JSON, validated again."""
    return Bundle.model_validate_json(bundle.model_dump_json())


def _references(node: Any) -> list[str]:
    """Every Reference.reference in a JSON tree."""
    if isinstance(node, dict):
        own = [node["reference"]] if isinstance(node.get("reference"), str) else []
        return own + [ref for value in node.values() for ref in _references(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _references(value)]
    return []


def test_each_created_resource_is_updated_entered_in_error_by_its_identifier() -> None:
    sources = _sources()
    sr = _sr(sources)
    maps = maps_of(sources)
    sent = _parsed(transaction_from_sr(sr, maps))
    void = _parsed(withdrawal_from_sr(sr, maps, reason="recall"))
    assert void.type == "transaction"
    kinds = [e.resource.get_resource_type() for e in void.entry]
    assert kinds == [e.resource.get_resource_type() for e in sent.entry]
    assert kinds == ["DiagnosticReport", "Device", "Observation", "Observation", "Media", "Media"]
    for old, new, kind in zip(sent.entry, void.entry, kinds, strict=True):
        assert new.resource.identifier == old.resource.identifier
        if kind == "Device":  # the model is not withdrawn: still a conditional create
            assert new.request == old.request and new.request.method == "POST"
            assert new.resource.status != "entered-in-error"
            continue
        assert new.resource.status == "entered-in-error"
        assert (new.request.method, new.request.ifNoneExist) == ("PUT", None)
        assert new.request.url == f"{kind}?{old.request.ifNoneExist}"
        (identifier,) = new.resource.identifier
        assert new.request.url == f"{kind}?identifier={identifier.system}|{identifier.value}"
    media = [e.resource for e in void.entry if e.resource.get_resource_type() == "Media"]
    media_ids = {m.identifier[0].value for m in media}
    assert media_ids == {f"urn:oid:{m.SOPInstanceUID}" for m in maps}


def test_references_inside_the_bundle_resolve() -> None:
    sources = _sources()
    void = withdrawal_from_sr(_sr(sources), maps_of(sources), reason="recall")
    urls = {e.fullUrl for e in void.entry}
    local = [ref for ref in _references(void.model_dump(mode="json")) if ref.startswith("urn:")]
    # the report's results and media, each Observation's and Media's device
    assert len(local) == 2 + 2 + 2 + 2 and set(local) <= urls


def test_the_reason_is_carried_verbatim_and_the_result_as_it_was() -> None:
    sr = _sr(_sources())
    sent = _parsed(transaction_from_sr(sr))
    void = _parsed(withdrawal_from_sr(sr, reason=NASTY + "\x07"))
    report, old_report = void.entry[0].resource, sent.entry[0].resource
    assert report.conclusion == f"Withdrawn: {NASTY}\n{old_report.conclusion}"
    observations = [e.resource for e in void.entry[2:]]
    assert [[n.text for n in o.note] for o in observations] == [[f"Withdrawn: {NASTY}"]] * 2
    # A conditional update replaces the resource whole: it must still say what it said.
    for old, new in zip(sent.entry[2:], void.entry[2:], strict=True):
        assert new.resource.valueCodeableConcept == old.resource.valueCodeableConcept
        assert new.resource.component == old.resource.component
        assert new.resource.subject == old.resource.subject
    assert report.subject == old_report.subject and report.basedOn == old_report.basedOn
    assert withdrawal_from_sr(sr).entry[0].resource.conclusion.startswith("Withdrawn\n")


def test_what_cannot_be_reported_cannot_be_withdrawn() -> None:
    from tests.hospital.test_hl7_withdrawal import _drop_groups

    sr = _sr(_sources())
    _drop_groups(sr)
    with pytest.raises(NotReportable, match="no finding"):
        withdrawal_from_sr(sr, reason="recall")
