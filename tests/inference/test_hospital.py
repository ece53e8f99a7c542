"""Predict in hospital formats, through the app factory with the trained model: a DICOM SR,
a FHIR Bundle, UIDs in JSON, scans fetched from a real PACS (Orthanc), and the refusals."""

from __future__ import annotations

import io
from collections.abc import Callable
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any

import hl7
import pydicom
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.media import Media
from fhir.resources.R4B.observation import Observation
from highdicom.sr.utils import find_content_items
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from models.card import ClassCode, IntendedUse
from service.registry import Registry
from service.storage import open_store
from tests.conftest import free_port
from tests.hospital.conftest import Orthanc, orthanc, study  # noqa: F401 (fixtures)
from tests.inference.conftest import MODEL, Trained, _onnx_only

PREDICT = f"/v1/models/{MODEL}:predict"
PNEUMONIA = ClassCode(scheme="SCT", value="233604007", meaning="Pneumonia")
SR, FHIR, HL7 = "application/dicom", "application/fhir+json", "x-application/hl7-v2+er7"
MULTIPART = 'multipart/related; type="application/dicom"'
SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"


@pytest.fixture
def registry(tmp_path: Path, trained: Trained) -> Registry:
    """Version 1 as published by a job spec that coded pneumonia and named CR chest scans."""
    reg = Registry(open_store(f"file://{tmp_path / 'artifacts'}"))
    card = trained.v1_card.model_copy(
        update={
            "class_codes": (None, PNEUMONIA),
            "intended_use": IntendedUse(modality="CR", body_part="CHEST"),
        }
    )
    reg.publish(MODEL, 1, _onnx_only(trained.v1_dir), card)
    reg.set_alias(MODEL, "production", 1, actor="test")
    return reg


def _post(client: Any, paths: list[Path], accept: str = "application/json", query: str = "") -> Any:
    files = {"file": [(io.BytesIO(p.read_bytes()), p.name) for p in paths]}
    return client.post(f"{PREDICT}{query}", data=files, headers={"Accept": accept})


def _sr_probabilities(data: bytes) -> list[tuple[str, float, str]]:
    """(finding code, probability, referenced SOP instance) per measurement group."""
    sr = pydicom.dcmread(io.BytesIO(data))
    groups = find_content_items(sr, name=codes.DCM.MeasurementGroup, recursive=True)
    out = []
    for group in groups:
        finding = find_content_items(group, name=codes.DCM.Finding)[0]
        number = next(i for i in group.ContentSequence if i.ValueType == "NUM")
        image = next(i for i in group.ContentSequence if i.ValueType == "IMAGE")
        out.append(
            (
                finding.ConceptCodeSequence[0].CodeValue,
                float(number.MeasuredValueSequence[0].FloatingPointValue),  # exact; DS rounds
                image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID,
            )
        )
    return out


def test_json_sr_and_fhir_answers_agree(
    client: Any,
    study: Callable[..., list[Path]],  # noqa: F811
) -> None:
    paths = study()
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    answer = _post(client, paths)
    assert answer.status_code == 200, answer.json
    predictions = answer.json["predictions"]
    for prediction, source in zip(predictions, sources, strict=True):
        assert prediction["dicom"] == {
            "study_instance_uid": source.StudyInstanceUID,
            "series_instance_uid": source.SeriesInstanceUID,
            "sop_instance_uid": source.SOPInstanceUID,
        }
    sr = _post(client, paths, SR)
    assert sr.status_code == 200 and sr.mimetype == SR
    assert pydicom.dcmread(io.BytesIO(sr.data)).StudyInstanceUID == sources[0].StudyInstanceUID
    expected = [
        (
            "233604007" if p["label"] == "pneumonia" else "normal",
            p["probabilities"][p["label"]],
            s.SOPInstanceUID,
        )
        for p, s in zip(predictions, sources, strict=True)
    ]
    assert _sr_probabilities(sr.data) == expected
    fhir = _post(client, paths, FHIR)
    assert fhir.status_code == 200 and fhir.mimetype == FHIR
    bundle = Bundle.model_validate_json(fhir.data)
    (report,) = [e.resource for e in bundle.entry if isinstance(e.resource, DiagnosticReport)]
    assert report.subject.identifier.value == sources[0].PatientID  # filed by patient
    assert report.basedOn[0].identifier.value == sources[0].AccessionNumber  # and order
    observations = [e.resource for e in bundle.entry if isinstance(e.resource, Observation)]
    for observation, prediction in zip(observations, predictions, strict=True):
        got = {c.code.text: float(c.valueQuantity.value) for c in observation.component}
        assert got == prediction["probabilities"]
        assert (
            observation.derivedFrom[0].identifier.value == f"urn:oid:{sources[0].StudyInstanceUID}"
        )


def test_the_hl7_answer_carries_the_json_answers_findings(
    client: Any,
    study: Callable[..., list[Path]],  # noqa: F811
) -> None:
    paths = study()
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    predictions = _post(client, paths).json["predictions"]
    answer = _post(client, paths, HL7)
    assert answer.status_code == 200 and answer.mimetype == HL7
    assert answer.mimetype_params == {"charset": "utf-8"}
    msg = hl7.parse(answer.data.decode())
    assert str(msg["PID.F3.R1.C1"]) == str(sources[0].PatientID)
    rows = [(str(s[3][0][0]), str(s[4]), str(s[5])) for s in msg.segments("OBX")]
    assert rows[0] == ("110180", "", str(sources[0].StudyInstanceUID))
    expected = []
    for i, (p, source) in enumerate(zip(predictions, sources, strict=True), start=1):
        code = (
            "233604007^Pneumonia^SCT" if p["label"] == "pneumonia" else "normal^normal^99SCANTUNE"
        )
        expected += [
            ("121071", str(i), code),
            ("PROB", str(i), str(p["probabilities"][p["label"]])),
        ]
        expected.append(("121112", str(i), source.SOPInstanceUID))
    assert rows[1:] == expected  # the exact doubles of the JSON answer
    mapped = hl7.parse(_post(client, paths, HL7, "?explain=true").data.decode())
    images = [s for s in mapped.segments("OBX") if str(s[2]) == "ED"]
    assert [str(s[4]) for s in images] == [str(i) for i in range(1, len(paths) + 1)]
    assert all(str(s[5]).startswith("^IM^JPEG^Base64^/9j/") for s in images)  # JPEG's magic


def _parts(answer: Any) -> list[pydicom.Dataset]:
    """The DICOM files of a multipart/related answer, read by the standard library's parser."""
    head = f"Content-Type: {answer.headers['Content-Type']}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + answer.data)
    assert message.get_content_type() == "multipart/related"
    assert message.get_param("type") == SR
    parts = list(message.iter_parts())
    assert all(p.get_content_type() == SR for p in parts)
    return [pydicom.dcmread(io.BytesIO(p.get_payload(decode=True))) for p in parts]


def test_a_multipart_answer_holds_the_sr_and_with_explain_each_scans_map(
    client: Any,
    study: Callable[..., list[Path]],  # noqa: F811
) -> None:
    paths = study()
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    plain = _post(client, paths, MULTIPART)
    assert plain.status_code == 200 and plain.mimetype == "multipart/related"
    (sr,) = _parts(plain)
    assert sr.Modality == "SR"
    j2k = f"{MULTIPART}; transfer-syntax=1.2.840.10008.1.2.4.90"  # JPEG 2000: not made here
    refused = _post(client, paths, j2k)
    assert refused.status_code == 406 and refused.mimetype == "application/problem+json"
    assert "explicit VR little endian (1.2.840.10008.1.2.1) only" in refused.json["detail"]
    assert _post(client, paths, f"{j2k}, application/json;q=0.5").mimetype == "application/json"
    explained = _post(client, paths, f"{MULTIPART}; transfer-syntax=*", "?explain=true")
    assert explained.status_code == 200
    sr, *maps = _parts(explained)
    assert sr.Modality == "SR" and len(maps) == len(sources)
    answer = _post(client, paths, query="?explain=true").json["predictions"]
    for image, source, prediction in zip(maps, sources, answer, strict=True):
        assert image.SOPClassUID == SC_STORAGE
        assert image.StudyInstanceUID == source.StudyInstanceUID
        assert image.PatientID == source.PatientID
        assert image.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert image.ImageType == ["DERIVED", "SECONDARY"]
        assert f"{prediction['label']} " in image.DerivationDescription
        assert image.pixel_array.shape[2] == 3  # the scan in colour under its map
    series = {m.SeriesInstanceUID for m in maps}
    assert len(series) == 1
    assert series.isdisjoint({sr.SeriesInstanceUID, sources[0].SeriesInstanceUID})
    assert len({m.SOPInstanceUID for m in maps}) == len(maps)
    fhir = Bundle.model_validate_json(_post(client, paths, FHIR, "?explain=true").data)
    media = {e.fullUrl: e.resource for e in fhir.entry if isinstance(e.resource, Media)}
    assert all(e.request is None for e in fhir.entry)  # a collection, not a transaction
    (report,) = [e.resource for e in fhir.entry if isinstance(e.resource, DiagnosticReport)]
    assert [m.link.reference for m in report.media] == list(media)
    identifiers = {m.identifier[0].value for m in media.values()}
    assert len(identifiers) == len(sources) and all(i.startswith("urn:oid:") for i in identifiers)
    for item, image in zip(media.values(), maps, strict=True):
        assert item.content.contentType == "image/png"
        assert (item.height, item.width) == (image.Rows, image.Columns)


def test_png_has_no_uids_and_gets_fhir_but_no_sr(client: Any, fixture_images: Path) -> None:
    png = [fixture_images / "normal_0.png"]
    assert "dicom" not in _post(client, png).json["predictions"][0]
    assert _post(client, png, FHIR).status_code == 200
    for accept in (SR, HL7, MULTIPART):
        refused = _post(client, png, accept)
        assert refused.status_code == 422
        assert "normal_0.png is not DICOM" in refused.json["detail"]


def test_an_hl7_answer_needs_a_patient_id(
    client: Any,
    study: Callable[..., list[Path]],  # noqa: F811
) -> None:
    refused = _post(client, study(PatientID=""), HL7)
    assert refused.status_code == 422 and "no Patient ID" in refused.json["detail"]


def test_two_studies_in_one_sr_are_refused(
    client: Any,
    study: Callable[..., list[Path]],  # noqa: F811
) -> None:
    paths = study(("normal_0_mono1.dcm",)) + study(("pneumonia_0_mono1.dcm",))
    refused = _post(client, paths, SR)
    assert refused.status_code == 422
    assert "2 studies" in refused.json["detail"]
    assert _post(client, paths).status_code == 200  # JSON needs no single study


def test_a_ct_scan_to_an_xray_model_is_refused_unless_allowed(
    client: Any,
    study: Callable[..., list[Path]],  # noqa: F811
) -> None:
    ct = study(("normal_0_mono1.dcm",), modality="CT")
    refused = _post(client, ct)
    assert refused.status_code == 422
    assert "modality CT" in refused.json["detail"] and "trained on CR" in refused.json["detail"]
    assert _post(client, ct, query="?allow_other_modality=true").status_code == 200
    assert _post(client, study(("normal_0_mono1.dcm",), modality="DX")).status_code == 200


def test_by_reference_is_off_without_a_pacs(client: Any) -> None:
    body = {"dicomweb": {"study_instance_uid": "1.2.3"}}
    refused = client.post(PREDICT, json=body)
    assert refused.status_code == 422 and "SCANTUNE_DICOMWEB_URL" in refused.json["detail"]
    assert client.post(f"{PREDICT}?store=true", json=body).status_code == 422
    bad = client.post(PREDICT, json={"dicomweb": {"study_instance_uid": "1.2.x"}})
    assert bad.status_code == 422 and bad.json["errors"][0]["loc"].startswith("body/dicomweb")


def _pacs_client(make_client: Callable[..., Any], orthanc: Orthanc) -> Any:  # noqa: F811
    user, password = orthanc.auth
    return make_client(
        dicomweb_url=orthanc.dicomweb, dicomweb_username=user, dicomweb_password=password
    )


def test_classify_by_uid_and_store_the_sr(
    make_client: Callable[..., Any],
    orthanc: Orthanc,  # noqa: F811
    study: Callable[..., list[Path]],  # noqa: F811
) -> None:
    client = _pacs_client(make_client, orthanc)
    paths = study()
    orthanc.upload(paths)
    uid = str(pydicom.dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)
    answer = client.post(f"{PREDICT}?store=true", json={"dicomweb": {"study_instance_uid": uid}})
    assert answer.status_code == 200, answer.json
    assert {p["dicom"]["study_instance_uid"] for p in answer.json["predictions"]} == {uid}
    stored = orthanc.qido(f"studies/{uid}/instances", Modality="SR")
    assert [i["00080018"]["Value"][0] for i in stored] == [
        answer.json["report"]["sop_instance_uid"]
    ]
    assert "attention_maps" not in answer.json["report"]
    explained = client.post(
        f"{PREDICT}?store=true&explain=true", json={"dicomweb": {"study_instance_uid": uid}}
    )
    assert explained.status_code == 200, explained.json
    maps = explained.json["report"]["attention_maps"]
    assert len(maps) == len(paths)
    instances = {
        i["00080018"]["Value"][0]: i["0020000E"]["Value"][0]
        for i in orthanc.qido(f"studies/{uid}/instances")
    }
    assert set(maps) <= set(instances)
    sources = {str(pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID) for p in paths}
    assert len({instances[m] for m in maps} | sources) == len(sources) + 1  # a series of maps


def test_pacs_refusals(
    make_client: Callable[..., Any],
    orthanc: Orthanc,  # noqa: F811
) -> None:
    client = _pacs_client(make_client, orthanc)
    unknown = generate_uid()
    missing = client.post(PREDICT, json={"dicomweb": {"study_instance_uid": unknown}})
    assert missing.status_code == 404 and unknown in missing.json["detail"]
    down = make_client(dicomweb_url=f"http://127.0.0.1:{free_port()}/dicom-web")
    gone = down.post(PREDICT, json={"dicomweb": {"study_instance_uid": unknown}})
    assert gone.status_code == 502 and gone.json["title"] == "Bad gateway"
