"""A DICOM Structured Report of a model's results: TID 1500 Measurement Report (highdicom).

One report per study: Patient and Study modules copied from the source scans, a new series
and instance (UIDs under the deployment's root), an image library of the sources and one
measurement group per scan: the reported class as a coded qualitative evaluation (concept
"Finding"), its calibrated probability as a numeric measurement, the algorithm (model name,
version, ONNX sha256) and a reference to the source SOP instance. Unless the deployment
turns it off, a "Qualitative Evaluations" container holds a statement that the result is
from an automated algorithm and not for diagnostic use (also the series description). A scan
the input check flagged gets its statement in its own group, beside its image reference.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from models.card import PRIVATE_CODING_SCHEME
from service.errors import Unprocessable
from service.hospital.results import ATYPICAL_NOTE, ModelIdentity, ReportSettings, ScanResult

if TYPE_CHECKING:
    from highdicom.sr import (
        AlgorithmIdentification,
        MeasurementsAndQualitativeEvaluations,
        ObservationContext,
        TextContentItem,
    )
    from pydicom import Dataset
    from pydicom.sr.coding import Code

SR_MEDIA_TYPE = "application/dicom"
PROBABILITY = ("PROB", PRIVATE_CODING_SCHEME, "Calibrated probability of the finding")
"""The measurement's concept: no standard code names a classifier's calibrated probability."""
STUDY_REQUIRED = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
TYPE2 = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
    "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
)  # fmt: skip
"""The Patient and General Study attributes every SR holds, empty when the source has none."""
COPIED = (
    *TYPE2, "SpecificCharacterSet", "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence",
    "OtherPatientIDsSequence", "PatientBirthTime", "PatientComments", "PatientSpeciesDescription",
    "PatientIdentityRemoved", "DeidentificationMethod", "DeidentificationMethodCodeSequence",
    "IssuerOfAccessionNumberSequence", "StudyDescription", "ProcedureCodeSequence",
    "ReferencedStudySequence", "AdmittingDiagnosesDescription", "PatientAge", "PatientSize",
    "PatientWeight",
)  # fmt: skip
"""The Patient, General Study and Patient Study attributes copied from the first source."""


def build_sr(
    sources: Sequence[Dataset],
    results: Sequence[ScanResult],
    model: ModelIdentity,
    settings: ReportSettings,
) -> Dataset:
    """The SR of `results` (one per source, same order) for source scans of one study; a 422
    when a source lacks the UIDs a reference needs or the sources span several studies."""
    import highdicom as hd

    if len(sources) != len(results) or not sources:
        raise ValueError("one result per source scan, and at least one")
    check_one_study(sources)
    headers = [_header(source) for source in sources]
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(model, settings),
        procedure_reported=_code(("363679005", "SCT", "Imaging procedure")),
        imaging_measurements=[
            _group(header, result, model, settings)
            for header, result in zip(headers, results, strict=True)
        ],
    )
    if settings.disclaimer:
        report[0].ContentSequence.append(_statement(settings.disclaimer))
    sr = hd.sr.ComprehensiveSR(
        evidence=headers,
        content=report[0],
        series_instance_uid=new_uid(settings),
        series_number=settings.series_number,
        sop_instance_uid=new_uid(settings),
        instance_number=1,
        manufacturer=settings.manufacturer,
        is_complete=True,
        is_final=False,
        is_verified=False,
    )
    sr.SeriesDescription = _series_description(model, settings)
    for element in headers[0]:
        if element.keyword in COPIED:
            sr[element.tag] = element
    sr.CodingSchemeIdentificationSequence = [_private_scheme(settings)]
    return sr


def _private_scheme(settings: ReportSettings) -> Dataset:
    """Declares the private scheme of the probability concept and of uncoded classes."""
    from pydicom import Dataset

    scheme = Dataset()
    scheme.CodingSchemeDesignator = PRIVATE_CODING_SCHEME
    scheme.CodingSchemeName = "scantune classes and measurements"
    scheme.CodingSchemeResponsibleOrganization = settings.manufacturer
    return scheme


def _series_description(model: ModelIdentity, settings: ReportSettings) -> str:
    """The statement when it fits the 64 characters of a LO, else its gist."""
    if not settings.disclaimer:
        return f"{model.name} {model.version} results"[:64]
    if len(settings.disclaimer) <= 64:
        return settings.disclaimer
    return "Automated algorithm result; not for diagnostic use"


def _header(source: Dataset) -> Dataset:
    """The attributes of `source` the report uses: its UIDs and the copied modules, with the
    attributes an SR must hold (type 2) present, empty where the source has none."""
    from pydicom import Dataset

    header = Dataset()
    for keyword in (*STUDY_REQUIRED, *COPIED):
        if keyword in source:
            header[keyword] = source[keyword]
        elif keyword in TYPE2:
            setattr(header, keyword, None)
    return header


def check_one_study(sources: Sequence[Dataset]) -> str:
    """The Study Instance UID the sources share, or a 422 saying why there is none."""
    for i, source in enumerate(sources):
        missing = [k for k in STUDY_REQUIRED if not source.get(k)]
        if missing:
            raise Unprocessable(
                f"scan {i + 1} has no {', '.join(missing)}: a DICOM report must reference it",
                errors=[{"loc": f"scan/{i}", "msg": f"missing {missing}", "type": "dicom"}],
            )
    studies = {str(s.StudyInstanceUID) for s in sources}
    if len(studies) > 1:
        raise Unprocessable(
            f"the scans come from {len(studies)} studies; a DICOM report covers one study:"
            " send each study's scans in a request of their own"
        )
    return studies.pop()


def new_uid(settings: ReportSettings, *entropy: str) -> str:
    """A new UID under the deployment's root (deterministic when `entropy` is given). With no
    root, pydicom's `generate_uid` ignores the entropy (a random 2.25 UID): a name-based UUID
    (ISO/IEC 9834-8) of it stands in."""
    from pydicom.uid import generate_uid

    if entropy and not settings.uid_root:
        return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, '/'.join(entropy)).int}"
    prefix = f"{settings.uid_root.rstrip('.')}." if settings.uid_root else None
    return str(generate_uid(prefix=prefix, entropy_srcs=list(entropy) or None))


def _code(triple: tuple[str, str, str]) -> Code:
    from pydicom.sr.coding import Code

    value, scheme, meaning = triple
    return Code(value, scheme, meaning)


def _class_code(model: ModelIdentity, label: str) -> Code:
    code = model.code_of(label)
    return _code((code.value, code.scheme, code.meaning))


def _algorithm(model: ModelIdentity) -> AlgorithmIdentification:
    import highdicom as hd

    return hd.sr.AlgorithmIdentification(
        name=model.name, version=str(model.version), parameters=[f"onnx_sha256={model.onnx_sha256}"]
    )


def _observation_context(model: ModelIdentity, settings: ReportSettings) -> ObservationContext:
    """The model as the observing device; its UID derives from the ONNX file's sha256."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=new_uid(settings, model.onnx_sha256),
        name=model.name[:64],
        manufacturer_name=settings.manufacturer,
        model_name=f"{model.name} version {model.version}"[:64],
    )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device, observer_identifying_attributes=device
    )
    return hd.sr.ObservationContext(observer_device_context=observer)


def _group(
    source: Dataset, result: ScanResult, model: ModelIdentity, settings: ReportSettings
) -> MeasurementsAndQualitativeEvaluations:
    """The scan's measurement group (TID 1501). A scan the input check flagged gets the
    statement as a text qualitative evaluation (TID 1501 row 12) in the group, so it is tied
    to the group's IMAGE reference as the finding is; highdicom builds coded ones only."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=new_uid(settings), identifier=f"{model.name} result"
        ),
        algorithm_id=_algorithm(model),
        source_images=[
            hd.sr.SourceImageForMeasurementGroup(source.SOPClassUID, source.SOPInstanceUID)
        ],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(
                name=codes.DCM.Finding, value=_class_code(model, result.label)
            )
        ],
        measurements=[
            hd.sr.Measurement(
                name=_code(PROBABILITY),
                value=result.probability,
                unit=_code(("1", "UCUM", "no units")),
                algorithm_id=_algorithm(model),
            )
        ],
    )
    if result.typical is False:
        group[0].ContentSequence.append(_comment(ATYPICAL_NOTE))
    return group


def _statement(text: str) -> Dataset:
    """TID 1500's "Qualitative Evaluations" container holding the disclaimer as a comment.
    highdicom builds only the imaging measurements of TID 1500, so this row is added here."""
    import highdicom as hd

    container = hd.sr.ContainerContentItem(
        name=_code(("C0034375", "UMLS", "Qualitative Evaluations")),
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    container.ContentSequence = hd.sr.ContentSequence([_comment(text)])
    return container


def _comment(text: str) -> TextContentItem:
    """A TEXT content item (DCM 121106 "Comment") the container or group CONTAINS."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    return hd.sr.TextContentItem(
        name=codes.DCM.Comment,
        value=text,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
