"""A result's SR as a FHIR R4 transaction Bundle: what the DICOM node POSTs to an EHR's FHIR
server.

The node keeps only the SR of a result (as for HL7 v2), so the Bundle renders the SR: the
DiagnosticReport, Device and Observations `service.hospital.fhir` builds for a predict, each
Observation with the reported class's calibrated probability only (the SR holds no other)
and, as its `note`, what the SR notes of that scan (the input check's statement, as the
predict's Bundle has it), the report's conclusion the SR's report-wide statement, the Device's
manufacturer the SR's. Every entry is a conditional create (`ifNoneExist`) on an identifier
the SR fixes: the report by the SR's SOP Instance UID, each Observation by its measurement
group's tracking UID, the Device by the model's ONNX sha256. A transaction sent again (its
answer lost) creates nothing twice, and the server takes all of it or none.

With the series' attention maps (a destination's `attention_maps`), each map is a Media
resource (an image: the Secondary Capture's pixels as PNG, created by the SC's SOP Instance
UID, the model its Device) that the report lists in `media`, so the EHR shows it beside the
findings. R4's Media, not a DocumentReference: it is what DiagnosticReport.media links.

When the model is recalled, `withdrawal_from_sr` sends the same resources again, each with
status entered-in-error, as conditional updates (`PUT DiagnosticReport?identifier=...`) on
the identifiers the creates used.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from models.card import ClassCode
from service.hospital.fhir import build_bundle
from service.hospital.results import (
    ModelIdentity,
    ReportSettings,
    ScanResult,
    ScanUIDs,
    Subject,
)
from service.hospital.sr_findings import (
    Finding,
    NotReportable,
    read_findings,
    report_statements,
)

if TYPE_CHECKING:
    from fhir.resources.R4B.bundle import Bundle, BundleEntry
    from fhir.resources.R4B.media import Media
    from fhir.resources.R4B.reference import Reference
    from pydicom import Dataset

DICOM_UID = "urn:dicom:uid"
ONNX_SHA256 = "urn:scantune:onnx-sha256"
MEDIA_TYPE = "http://terminology.hl7.org/CodeSystem/media-type"


def transaction_from_sr(sr: Dataset, maps: Sequence[Dataset] = ()) -> Bundle:
    """The transaction of `sr`, with `maps` (its attention maps' Secondary Captures) as the
    report's media; NotReportable when it holds no finding, or a finding without the tracking
    UID or the model its identifiers need."""
    from fhir.resources.R4B.annotation import Annotation
    from fhir.resources.R4B.bundle import BundleEntryRequest
    from fhir.resources.R4B.identifier import Identifier

    findings = read_findings(sr)
    if not findings:
        raise NotReportable("the report holds no finding")
    model = _model(findings)
    settings = ReportSettings(
        disclaimer=" ".join(report_statements(sr)) or None,
        manufacturer=str(sr.get("Manufacturer") or "") or ReportSettings().manufacturer,
    )
    bundle = build_bundle(
        [ScanUIDs(str(sr.StudyInstanceUID), None, f.sop_instance_uid, f.sop_class_uid)
         for f in findings],
        [ScanResult(f.code[1], {f.code[1]: f.probability} if f.probability is not None else {})
         for f in findings],
        model,
        settings,
        Subject.common([sr]),
    )  # fmt: skip
    # build_bundle's order: the report, the Device, then one Observation per finding.
    keys = [
        (DICOM_UID, f"urn:oid:{sr.SOPInstanceUID}", ()),
        (ONNX_SHA256, model.onnx_sha256, ()),
        *[(DICOM_UID, f"urn:oid:{f.tracking_uid}", f.notes) for f in findings],
    ]
    for entry, (system, value, notes) in zip(bundle.entry or [], keys, strict=True):
        resource = entry.resource
        assert resource is not None
        kind = resource.get_resource_type()
        if kind != "Device":  # it carries its identifier already
            resource.identifier = [Identifier(system=system, value=value)]  # type: ignore[attr-defined]
        if notes:  # the scan's own, on its Observation
            resource.note = [Annotation(text=text) for text in notes]  # type: ignore[attr-defined]
        entry.request = BundleEntryRequest(
            method="POST", url=kind, ifNoneExist=f"identifier={system}|{value}"
        )
    if maps:
        add_maps(bundle, maps)
    bundle.type = "transaction"
    return bundle


def withdrawal_from_sr(sr: Dataset, maps: Sequence[Dataset] = (), reason: str = "") -> Bundle:
    """A FHIR R4 transaction marking the result of `sr` entered-in-error: the bundle
    `transaction_from_sr(sr, maps)` sent, each DiagnosticReport, Observation and Media with
    status entered-in-error and "Withdrawn: <reason>" (the report's conclusion and the others'
    `note` begin with it), each a conditional update on the identifier its create used;
    NotReportable as for transaction_from_sr.

    A conditional update (hl7.org/fhir/R4/http.html#cond-update; in a transaction, PUT with
    request.url `Type?search`) updates the one resource the search matches, so the server
    changes the resource it created rather than adding one; the body replaces it whole,
    which is why it is the result as sent, only status and note changed. No match (and no
    id, which these bodies never carry): the server creates it, already entered-in-error, a
    record that the result must not be used should it arrive late or have been lost. Several
    matches: 412, and the transaction fails whole. The Device stays a conditional create:
    the model still exists, and a transaction runs its POSTs before its PUTs (R4 #trules),
    so the Observations' and Media's urn:uuid device references resolve to it as before."""
    bundle = transaction_from_sr(sr, maps)
    # FHIR strings hold no control character but tab, CR and LF.
    text = "".join(c if c >= " " or c in "\t\r\n" else " " for c in reason).strip()
    note = f"Withdrawn: {text}" if text else "Withdrawn"
    for entry in bundle.entry or []:
        if entry.resource is not None and entry.resource.get_resource_type() != "Device":
            _withdraw(entry, note)
    return bundle


def _withdraw(entry: BundleEntry, note: str) -> None:
    """The entry's resource marked entered-in-error with `note` first (in the report's
    conclusion, or the others' notes: a flagged scan's Observation keeps its own), its
    conditional create turned into the conditional update on the same search."""
    from fhir.resources.R4B.annotation import Annotation
    from fhir.resources.R4B.diagnosticreport import DiagnosticReport

    resource, request = entry.resource, entry.request
    assert resource is not None and request is not None
    resource.status = "entered-in-error"  # type: ignore[attr-defined]
    if isinstance(resource, DiagnosticReport):
        resource.conclusion = "\n".join(filter(None, [note, resource.conclusion]))
    else:  # Observation and Media: note, 0..* Annotation
        resource.note = [Annotation(text=note), *(resource.note or [])]  # type: ignore[attr-defined]
    request.method, request.url = "PUT", f"{request.url}?{request.ifNoneExist}"
    request.ifNoneExist = None


def add_maps(bundle: Bundle, maps: Sequence[Dataset], *, create: bool = True) -> None:
    """Each map a Media entry (identified by its SOP Instance UID; in a transaction, `create`,
    a conditional create by it) that the report, the Bundle's first entry, lists in `media`.
    No map: the Bundle is left as it is."""
    if not maps:
        return
    from fhir.resources.R4B.bundle import BundleEntry, BundleEntryRequest
    from fhir.resources.R4B.diagnosticreport import DiagnosticReportMedia
    from fhir.resources.R4B.identifier import Identifier
    from fhir.resources.R4B.reference import Reference

    report, device = (bundle.entry or [])[:2]
    assert report.resource is not None
    links, entries = [], []
    for image in maps:
        url, value = f"urn:uuid:{uuid.uuid4()}", f"urn:oid:{image.SOPInstanceUID}"
        media = _media(image, Reference(reference=device.fullUrl), report.resource.subject)  # type: ignore[attr-defined]
        media.identifier = [Identifier(system=DICOM_UID, value=value)]
        request = BundleEntryRequest(
            method="POST", url="Media", ifNoneExist=f"identifier={DICOM_UID}|{value}"
        )
        entries.append(
            BundleEntry(fullUrl=url, resource=media, request=request if create else None)
        )
        title = media.content.title  # type: ignore[union-attr]
        links.append(DiagnosticReportMedia(comment=title, link=Reference(reference=url)))
    bundle.entry = [*(bundle.entry or []), *entries]
    report.resource.media = links  # type: ignore[attr-defined]


def _media(image: Dataset, device: Reference, subject: Reference | None) -> Media:
    """An attention map (its Secondary Capture) as an image Media: PNG, titled with what the
    SC says it shows (the class, the model, not for diagnostic use)."""
    from fhir.resources.R4B.attachment import Attachment
    from fhir.resources.R4B.codeableconcept import CodeableConcept
    from fhir.resources.R4B.coding import Coding
    from fhir.resources.R4B.media import Media

    from service.hospital.attention_map import encoded_map

    content = Attachment(
        contentType="image/png",
        data=base64.b64encode(encoded_map(image, "PNG")),  # base64 text, as fhir.resources takes it
        title=str(image.get("DerivationDescription") or "Attention map")[:1024],
    )
    return Media(
        status="completed",
        type=CodeableConcept(coding=[Coding(system=MEDIA_TYPE, code="image", display="Image")]),
        subject=subject,
        device=device,
        height=int(image.Rows),
        width=int(image.Columns),
        content=content,
    )


def _model(findings: list[Finding]) -> ModelIdentity:
    """The model the SR names (its first group's algorithm) and the classes it reported."""
    first = findings[0]
    sha256 = first.parameter("onnx_sha256")
    if not first.algorithm_name or not first.algorithm_version.isdigit() or not sha256:
        raise NotReportable("the report does not name its model (name, version, ONNX sha256)")
    if any(f.tracking_uid is None for f in findings):
        raise NotReportable("a measurement group of the report has no tracking UID")
    labels: dict[str, ClassCode] = {}
    for f in findings:
        value, meaning, scheme = f.code
        labels.setdefault(meaning, ClassCode(value=value, meaning=meaning, scheme=scheme))
    return ModelIdentity(
        first.algorithm_name,
        int(first.algorithm_version),
        sha256,
        tuple(labels),
        tuple(labels.values()),
    )
