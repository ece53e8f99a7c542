"""A FHIR R4 Bundle of a model's results, built and validated with `fhir.resources` (R4B).

A `collection` Bundle: a DiagnosticReport (status `preliminary`) over the ImagingStudy of
the scans, referenced by its Study Instance UID (`urn:dicom:uid` identifier), with one
Observation per scan: the reported class as `valueCodeableConcept` (code DCM 121071
"Finding") and each class's calibrated probability as a component. The model is a Device:
each Observation's `device`, as R4 allows. R4's DiagnosticReport.performer admits only
people and organisations, so the report names the model in its conclusion instead. When the
DICOM scans agree on them, the patient (by Patient ID, a logical reference: the EHR resolves
it) is the report's and each Observation's `subject`, and the order (by Accession Number) the
report's `basedOn`, so an EHR can file the result where it belongs.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

from models.card import ClassCode
from service.hospital.results import (
    ATYPICAL_NOTE,
    ModelIdentity,
    ReportSettings,
    ScanResult,
    ScanUIDs,
    Subject,
)

if TYPE_CHECKING:
    from fhir.resources.R4B.bundle import Bundle
    from fhir.resources.R4B.codeableconcept import CodeableConcept
    from fhir.resources.R4B.coding import Coding
    from fhir.resources.R4B.device import Device
    from fhir.resources.R4B.diagnosticreport import DiagnosticReport
    from fhir.resources.R4B.observation import Observation
    from fhir.resources.R4B.reference import Reference

FHIR_MEDIA_TYPE = "application/fhir+json"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
UCUM = "http://unitsofmeasure.org"
SYSTEMS = {
    "DCM": DCM,
    "SCT": "http://snomed.info/sct",
    "LN": "http://loinc.org",
    "RADLEX": "http://radlex.org",
    "UCUM": UCUM,
    "HL70074": "http://terminology.hl7.org/CodeSystem/v2-0074",
    "HL70203": "http://terminology.hl7.org/CodeSystem/v2-0203",
    "OBSCAT": "http://terminology.hl7.org/CodeSystem/observation-category",
}
"""FHIR code system URIs of DICOM coding scheme designators; others get SCHEME_URI."""
SCHEME_URI = "https://scantune.dev/fhir/CodeSystem/"
FINDING = ClassCode(scheme="DCM", value="121071", meaning="Finding")
IMAGING_REPORT = ClassCode(scheme="LN", value="18748-4", meaning="Diagnostic imaging study")
ACCESSION = ClassCode(scheme="HL70203", value="ACSN", meaning="Accession ID")


def build_bundle(
    scans: Sequence[ScanUIDs | None],
    results: Sequence[ScanResult],
    model: ModelIdentity,
    settings: ReportSettings,
    subject: Subject | None = None,
) -> Bundle:
    """The Bundle of `results` (one per scan; a scan's UIDs are None for PNG or JPEG), about
    `subject`'s patient and order when given."""
    from fhir.resources.R4B.bundle import Bundle, BundleEntry

    if len(scans) != len(results) or not scans:
        raise ValueError("one result per scan, and at least one")
    device_url = _urn()
    studies = sorted({s.study_instance_uid for s in scans if s and s.study_instance_uid})
    patient = _patient(subject)
    observations = [
        (_urn(), _observation(scan, result, model, device_url, patient))
        for scan, result in zip(scans, results, strict=True)
    ]
    report = _report(model, settings, studies, [url for url, _ in observations], patient, subject)
    entries = [(_urn(), report), (device_url, _device(model, settings)), *observations]
    return Bundle(
        type="collection",
        entry=[BundleEntry(fullUrl=url, resource=resource) for url, resource in entries],
    )


def coding(code: ClassCode) -> Coding:
    """A DICOM-style code as a FHIR Coding."""
    from fhir.resources.R4B.coding import Coding

    system = SYSTEMS.get(code.scheme, f"{SCHEME_URI}{code.scheme}")
    return Coding(system=system, code=code.value, display=code.meaning)


def _concept(code: ClassCode, text: str | None = None) -> CodeableConcept:
    from fhir.resources.R4B.codeableconcept import CodeableConcept

    return CodeableConcept(coding=[coding(code)], text=text)


def _decimal(value: float) -> Decimal:
    """The float as the decimal its shortest repr spells: JSON gives back the same float."""
    return Decimal(repr(float(value)))


def _urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def _study(uid: str, display: str | None = None) -> Reference:
    """A logical reference to the ImagingStudy with this Study Instance UID."""
    from fhir.resources.R4B.identifier import Identifier
    from fhir.resources.R4B.reference import Reference

    identifier = Identifier(system="urn:dicom:uid", value=f"urn:oid:{uid}")
    return Reference(type="ImagingStudy", identifier=identifier, display=display)


def _patient(subject: Subject | None) -> Reference | None:
    """The patient by Patient ID (and its issuer as the assigner), a logical reference."""
    from fhir.resources.R4B.identifier import Identifier
    from fhir.resources.R4B.reference import Reference

    if subject is None or not subject.patient_id:
        return None
    assigner = Reference(display=subject.issuer) if subject.issuer else None
    identifier = Identifier(value=subject.patient_id, assigner=assigner)
    return Reference(type="Patient", identifier=identifier)


def _order(subject: Subject | None) -> list[Reference] | None:
    """The imaging order by Accession Number (identifier type ACSN), a logical reference."""
    from fhir.resources.R4B.identifier import Identifier
    from fhir.resources.R4B.reference import Reference

    if subject is None or not subject.accession:
        return None
    identifier = Identifier(type=_concept(ACCESSION), value=subject.accession)
    return [Reference(type="ServiceRequest", identifier=identifier)]


def _report(
    model: ModelIdentity,
    settings: ReportSettings,
    studies: list[str],
    results: list[str],
    patient: Reference | None,
    subject: Subject | None,
) -> DiagnosticReport:
    from fhir.resources.R4B.diagnosticreport import DiagnosticReport
    from fhir.resources.R4B.reference import Reference

    named = f"{model.name} version {model.version} (ONNX sha256 {model.onnx_sha256})"
    radiology = ClassCode(scheme="HL70074", value="RAD", meaning="Radiology")
    return DiagnosticReport(
        status="preliminary",
        category=[_concept(radiology)],
        code=_concept(IMAGING_REPORT),
        subject=patient,
        basedOn=_order(subject),
        result=[Reference(reference=url, type="Observation") for url in results],
        imagingStudy=[_study(uid) for uid in studies] or None,
        conclusion=" ".join(filter(None, [f"Classified by {named}.", settings.disclaimer])),
    )


def _device(model: ModelIdentity, settings: ReportSettings) -> Device:
    from fhir.resources.R4B.device import Device, DeviceDeviceName, DeviceVersion
    from fhir.resources.R4B.identifier import Identifier

    return Device(
        identifier=[Identifier(system="urn:scantune:onnx-sha256", value=model.onnx_sha256)],
        manufacturer=settings.manufacturer,
        deviceName=[DeviceDeviceName(name=model.name, type="model-name")],
        version=[DeviceVersion(value=str(model.version))],
    )


def _observation(
    scan: ScanUIDs | None,
    result: ScanResult,
    model: ModelIdentity,
    device_url: str,
    patient: Reference | None,
) -> Observation:
    from fhir.resources.R4B.annotation import Annotation
    from fhir.resources.R4B.observation import Observation, ObservationComponent
    from fhir.resources.R4B.quantity import Quantity
    from fhir.resources.R4B.reference import Reference

    imaging = ClassCode(scheme="OBSCAT", value="imaging", meaning="Imaging")
    components = [
        ObservationComponent(
            code=_concept(code, name),
            valueQuantity=Quantity(
                value=_decimal(result.probabilities[name]),
                unit="probability",
                system=UCUM,
                code="1",
            ),
        )
        for name, code in zip(model.classes, model.codes, strict=True)
        if name in result.probabilities  # all from a predict; from an SR, the finding's only
    ]
    study = scan.study_instance_uid if scan else None
    return Observation(
        status="preliminary",
        category=[_concept(imaging)],
        code=_concept(FINDING),
        subject=patient,
        valueCodeableConcept=_concept(model.code_of(result.label), result.label),
        component=components,
        device=Reference(reference=device_url, type="Device"),
        derivedFrom=[_study(study, f"SOP Instance UID {scan.sop_instance_uid}")]
        if scan and study
        else None,
        note=[Annotation(text=ATYPICAL_NOTE)] if result.typical is False else None,
    )
