"""The FHIR builder: a Bundle fhir.resources parses back, with the study and probabilities."""

from __future__ import annotations

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation

from service.hospital.fhir import build_bundle
from service.hospital.results import ReportSettings, ScanUIDs
from tests.hospital.test_sr import MODEL, RESULTS

SCANS = [ScanUIDs("1.2.3", "1.2.3.1", "1.2.3.1.1"), ScanUIDs("1.2.3", "1.2.3.1", "1.2.3.1.2")]


def _parsed(scans: list[ScanUIDs | None]) -> Bundle:
    built = build_bundle(scans, RESULTS, MODEL, ReportSettings())
    return Bundle.model_validate_json(built.model_dump_json())


def _of(bundle: Bundle, kind: type) -> list:  # type: ignore[type-arg]
    return [e.resource for e in bundle.entry if isinstance(e.resource, kind)]


def test_the_report_is_preliminary_and_names_the_study() -> None:
    bundle = _parsed(list(SCANS))
    (report,) = _of(bundle, DiagnosticReport)
    assert report.status == "preliminary"
    assert [s.identifier.value for s in report.imagingStudy] == ["urn:oid:1.2.3"]
    assert "not for diagnostic use" in report.conclusion
    observations = _of(bundle, Observation)
    assert len(report.result) == len(observations) == 2
    urls = {e.fullUrl for e in bundle.entry if isinstance(e.resource, Observation)}
    assert {r.reference for r in report.result} == urls


def test_each_observation_codes_the_finding_and_carries_the_probabilities() -> None:
    bundle = _parsed(list(SCANS))
    (device,) = _of(bundle, Device)
    device_url = next(e.fullUrl for e in bundle.entry if e.resource is device)
    assert device.version[0].value == "3" and device.deviceName[0].name == "chest-xray"
    first, second = _of(bundle, Observation)
    assert second.valueCodeableConcept.coding[0].system == "http://snomed.info/sct"
    assert second.valueCodeableConcept.coding[0].code == "233604007"
    assert first.valueCodeableConcept.coding[0].code == "normal"
    for observation, result in zip((first, second), RESULTS, strict=True):
        assert observation.device.reference == device_url
        probabilities = {c.code.text: float(c.valueQuantity.value) for c in observation.component}
        assert probabilities == result.probabilities
    assert second.derivedFrom[0].display == "SOP Instance UID 1.2.3.1.2"


def test_png_scans_have_no_study() -> None:
    bundle = _parsed([None, None])
    (report,) = _of(bundle, DiagnosticReport)
    assert report.imagingStudy is None
    assert all(o.derivedFrom is None for o in _of(bundle, Observation))


def test_the_patient_and_order_are_named_when_the_scans_agree() -> None:
    from pydicom import Dataset

    from service.hospital.results import Subject

    def header(patient: str, accession: str) -> Dataset:
        ds = Dataset()
        ds.PatientID, ds.IssuerOfPatientID, ds.AccessionNumber = patient, "HOSP-A", accession
        return ds

    subject = Subject.common([header("P-7", "A-9"), header("P-7", "A-9")])
    assert subject == Subject("P-7", "HOSP-A", "A-9")
    built = build_bundle(list(SCANS), RESULTS, MODEL, ReportSettings(), subject)
    bundle = Bundle.model_validate_json(built.model_dump_json())
    (report,) = _of(bundle, DiagnosticReport)
    assert report.subject.type == "Patient" and report.subject.identifier.value == "P-7"
    assert report.subject.identifier.assigner.display == "HOSP-A"
    (order,) = report.basedOn
    assert (order.type, order.identifier.value) == ("ServiceRequest", "A-9")
    assert order.identifier.type.coding[0].code == "ACSN"
    assert order.identifier.type.coding[0].system.endswith("/v2-0203")
    assert {o.subject.identifier.value for o in _of(bundle, Observation)} == {"P-7"}

    mixed = Subject.common([header("P-7", "A-9"), header("P-8", "A-9")])
    assert mixed == Subject(None, None, "A-9")  # two patients: none named, the order is one
    assert Subject.common([header("P-7", "A-9"), header("P-8", "A-10")]) is None
    assert Subject.common([]) is None
    (unnamed,) = _of(_parsed(list(SCANS)), DiagnosticReport)
    assert unnamed.subject is None and unnamed.basedOn is None
