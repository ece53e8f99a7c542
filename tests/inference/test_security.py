"""The inference service with several clients, tried as each would: decompression bombs
refused without the memory spike, the pixel budget charged before decoding, patient data
kept out of logs and answers, per-client rate limits and the audit trail of predictions."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from PIL import Image

from service.audit import hash_uid
from service.auth import hash_key
from tests.conftest import REPO
from tests.data.make_fixtures import with_elements
from tests.inference.conftest import MODEL

PREDICT = f"/v1/models/{MODEL}:predict"
IMAGES = Path(__file__).resolve().parents[1] / "data" / "images"
SENTINEL = "PHI-SENTINEL-7Q4Z"


def jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (width, height), 90).save(out, "JPEG", quality=30)
    return out.getvalue()


def dicom_with_frame(frame: bytes, rows: int, cols: int) -> bytes:
    """A JPEG baseline DICOM whose header claims rows x cols, holding `frame` as is."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, generate_uid()
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, cols, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


# Peak RSS from VmHWM, this process's own high-water mark: getrusage's ru_maxrss survives
# exec on Linux, so a child of a large pytest process would start at its parent's size.
PEAK_RSS = textwrap.dedent(
    """
    import re, sys
    from models import scans

    def peak_mb():
        status = open("/proc/self/status").read()
        return int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) // 1024

    data = open(sys.argv[1], "rb").read()
    scans.load_dicom_reader()
    before = peak_mb()
    try:
        scans.decode(data, "scan.dcm")
        outcome = "decoded"
    except scans.ImageDecodeError as exc:
        outcome = exc.reason
    print(peak_mb() - before, outcome, sep="|")
    """
)


def peak_rss_growth_mb(data: bytes, tmp_path: Path) -> tuple[int, str]:
    """Decode `data` in a fresh process: how far its peak RSS grew (MB), and the outcome."""
    path = tmp_path / "scan.dcm"
    path.write_bytes(data)
    result = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, str(path)],
        capture_output=True, text=True, cwd=REPO, check=True, timeout=120,
    )  # fmt: skip
    grown, outcome = result.stdout.strip().rsplit("\n", 1)[-1].split("|", 1)
    return int(grown), outcome


def test_a_frame_larger_than_its_dicom_header_is_refused_without_the_memory_spike(
    tmp_path: Path, make_client: Callable[..., Any]
) -> None:
    frame = jpeg(6000, 6000)  # 36 MP in a few hundred kB
    bomb = dicom_with_frame(frame, 8, 8)
    grown, outcome = peak_rss_growth_mb(bomb, tmp_path)
    assert outcome == "the compressed frame is 6000x6000, not the 8x8 the DICOM header gives"
    assert grown < 30, f"peak RSS grew {grown} MB refusing it"
    # the measurement does see a decode of that frame: the honest file costs far more
    honest_growth, honest = peak_rss_growth_mb(dicom_with_frame(frame, 6000, 6000), tmp_path)
    assert honest == "decoded" and honest_growth > 100
    response = make_client().post(PREDICT, data={"file": (io.BytesIO(bomb), "bomb.dcm")})
    assert response.status_code == 422
    assert "not the 8x8" in response.json["detail"]


def test_jpeg_and_jpeg2000_frames_declare_their_size() -> None:
    from PIL import features

    from models.scans.embedded import frame_size

    assert frame_size(jpeg(300, 200)) == (200, 300)
    assert frame_size(b"not a codestream") is None
    if not features.check("jpg_2000"):
        pytest.skip("Pillow was built without OpenJPEG")
    for kind in ("j2k", "jp2"):
        out = io.BytesIO()
        Image.new("L", (120, 70), 3).save(out, "JPEG2000", no_jp2=kind == "j2k")
        assert frame_size(out.getvalue()) == (70, 120), kind


def test_a_scan_over_the_remaining_budget_is_refused_before_it_is_decoded() -> None:
    from models import scans

    png = (IMAGES / "big_normal_0.png").read_bytes()  # 512 x 512
    with pytest.raises(scans.OverPixelBudget) as refused:
        scans.decode(png, "big.png", budget=512 * 512 - 1)
    assert refused.value.pixels == 512 * 512
    assert scans.decode(png, "big.png", budget=512 * 512).shape == (512, 512)
    dicom = (IMAGES / "normal_0_rescale.dcm").read_bytes()
    with pytest.raises(scans.OverPixelBudget):
        scans.decode(dicom, "x.dcm", budget=10)


def test_a_refused_scan_ends_the_request_before_the_next_is_decoded(
    make_client: Callable[..., Any],
) -> None:
    """64 bombs in one request cost one refusal: the first refused scan is the answer."""
    bomb = dicom_with_frame(jpeg(2000, 2000), 8, 8)
    files = [(io.BytesIO(bomb), f"bomb{i}.dcm") for i in range(64)]
    response = make_client().post(PREDICT, data={"file": files})
    assert response.status_code == 422
    assert [e["loc"] for e in response.json["errors"]] == ["bomb0.dcm"]


def test_the_gdcm_helper_gives_up_well_before_the_worker_is_killed() -> None:
    from models.scans.limits import HELPER_TIMEOUT_S
    from service.commands.serve import SERVICES

    worker_timeout = SERVICES["inference"].layouts["sync"].timeout_s
    assert worker_timeout / 2 >= HELPER_TIMEOUT_S


# patient data
@pytest.fixture
def every_log_line() -> Iterator[io.StringIO]:
    """Every log line of every logger, as the JSON handler writes them: a handler of its own
    beside the app's (which `create_app` replaces); build clients with log_level=DEBUG."""
    from service.logs import RequestIdFilter, formatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter("json"))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    yield stream
    root.removeHandler(handler)


def sentinel_dicoms() -> dict[str, bytes]:
    base = (IMAGES / "normal_0_rescale.dcm").read_bytes()
    tags = {
        "PatientName": f"{SENTINEL}^John",
        "PatientID": SENTINEL,
        "StudyDescription": SENTINEL,
        "InstitutionName": SENTINEL,
    }
    tagged = with_elements(base, **tags)
    return {
        "valid": tagged,
        "bad window": with_elements(tagged, WindowCenter=SENTINEL.encode(), WindowWidth=b"40"),
        "bad rescale": with_elements(tagged, RescaleSlope=f"{SENTINEL}".encode()),
        "bad date": with_elements(tagged, PatientBirthDate=SENTINEL.encode()),
        "truncated": tagged[: len(tagged) - 1000],
    }


def test_patient_data_in_dicom_tags_reaches_no_log_line_and_no_answer(
    make_client: Callable[..., Any], every_log_line: io.StringIO
) -> None:
    client = make_client(log_level="DEBUG")
    answers = []
    for case, data in sentinel_dicoms().items():
        for path, body in (
            (PREDICT, {"data": {"file": (io.BytesIO(data), "scan.dcm")}}),
            (PREDICT, {"data": data, "content_type": "application/dicom"}),
        ):
            response = client.post(path, **body)
            answers.append((case, response.status_code, response.get_data(as_text=True)))
            answers.append((case, response.status_code, str(dict(response.headers))))
    statuses = {case: status for case, status, _ in answers}
    assert statuses["valid"] == 200 and statuses["truncated"] == 422
    assert statuses["bad window"] == 422 and statuses["bad rescale"] == 422
    for case, status, text in answers:
        assert SENTINEL not in text, (case, status, text)
    logged = every_log_line.getvalue()
    assert "predict request_id=" in logged  # the capture works
    assert SENTINEL not in logged


@pytest.mark.parametrize(
    "accept", ["application/dicom", "application/fhir+json", "x-application/hl7-v2+er7"]
)
def test_hospital_answers_leave_neither_patient_data_nor_uids_in_the_logs(
    make_client: Callable[..., Any], every_log_line: io.StringIO, accept: str
) -> None:
    """Building an SR, a Bundle or an HL7 message runs DICOM libraries that log the values and
    UIDs they copy: none of it may reach a log line, at any log level."""
    client = make_client(log_level="DEBUG")
    study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    scan = with_elements(
        sentinel_dicoms()["valid"], StudyInstanceUID=study, SeriesInstanceUID=series
    )
    uids = pydicom.dcmread(io.BytesIO(scan), stop_before_pixels=True)
    answer = client.post(
        PREDICT, data={"file": (io.BytesIO(scan), "scan.dcm")}, headers={"Accept": accept}
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)
    logged = every_log_line.getvalue()
    assert "predict request_id=" in logged  # the capture works
    for value in (SENTINEL, uids.SOPInstanceUID, uids.StudyInstanceUID, uids.SeriesInstanceUID):
        assert str(value) not in logged, value


def test_patient_data_in_file_names_reaches_no_log_line(
    make_client: Callable[..., Any], every_log_line: io.StringIO
) -> None:
    client = make_client(log_level="DEBUG")
    good = f"{SENTINEL}-Doe-John-1970.png"
    bad = f"{SENTINEL}-Roe-Jane.dcm"
    scan = io.BytesIO((IMAGES / "normal_0.png").read_bytes())
    ok = client.post(PREDICT, data={"file": [(scan, good)]})
    refused = client.post(PREDICT, data={"file": [(io.BytesIO(b"\0" * 300), bad)]})
    assert ok.status_code == 200 and ok.json["predictions"][0]["file"] == good
    assert refused.status_code == 422 and bad in refused.json["detail"]  # back to its sender
    logged = every_log_line.getvalue()
    assert "status=422" in logged
    assert SENTINEL not in logged


# limits and the audit trail
def keyed_client(make_client: Callable[..., Any], **env: str) -> Any:
    keys = [
        {
            "name": "pacs-1",
            "client": "radiology",
            "sha256": hash_key("k-pacs"),
            "scopes": ["predict"],
        },
        {"name": "ci", "sha256": hash_key("k-ci"), "scopes": ["predict"]},
    ]
    return make_client(auth_disabled="false", api_keys=json.dumps(keys), **env)


def audit_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    return [line["audit"] for line in lines if line["logger"] == "scantune.audit"]


def test_predictions_are_rate_limited_per_client_and_audited(
    make_client: Callable[..., Any], every_log_line: io.StringIO
) -> None:
    client = keyed_client(make_client, rate_limits='{"predict": "2/minute"}')
    pacs = {"Authorization": "Bearer k-pacs"}
    scan = (IMAGES / "normal_0.png").read_bytes()

    def predict(headers: dict[str, str]) -> Any:
        return client.post(PREDICT, data=scan, content_type="image/png", headers=headers)

    assert [predict(pacs).status_code for _ in range(2)] == [200, 200]
    limited = predict(pacs)
    assert limited.status_code == 429 and 1 <= int(limited.headers["Retry-After"]) <= 60
    assert predict({"Authorization": "Bearer k-ci"}).status_code == 200  # its own budget
    records = audit_lines(every_log_line)
    served = [r for r in records if r["action"] == "prediction_served"]
    assert [(r["client"], r["outcome"]) for r in served] == [
        ("radiology", "served"), ("radiology", "served"), ("radiology", "status 429"),
        ("ci", "served"),
    ]  # fmt: skip
    assert served[0]["target"] == f"model/{MODEL}"
    assert served[0]["detail"] == {"version": 1, "scans": 1, "studies": []}
    assert all(r["request_id"] for r in served)
    [limit] = [r for r in records if r["action"] == "rate_limited"]
    assert (limit["client"], limit["target"]) == ("radiology", "predict")


def test_a_dicom_prediction_is_audited_with_its_study_as_a_salted_hash_only(
    make_client: Callable[..., Any], every_log_line: io.StringIO
) -> None:
    client = keyed_client(make_client, audit_salt="pepper")
    study = "1.2.826.0.1.3680043.8.498.4242424242"
    scan = with_elements((IMAGES / "normal_0_rescale.dcm").read_bytes(), StudyInstanceUID=study)
    assert str(pydicom.dcmread(io.BytesIO(scan)).StudyInstanceUID) == study
    answer = client.post(
        PREDICT, data=scan, content_type="application/dicom", headers={"X-API-Key": "k-pacs"}
    )
    assert answer.status_code == 200, answer.get_json()
    [served] = [r for r in audit_lines(every_log_line) if r["action"] == "prediction_served"]
    assert served["detail"]["studies"] == [hash_uid(study, "pepper")]
    assert study not in every_log_line.getvalue()


def test_a_refused_key_is_audited_without_the_key(
    make_client: Callable[..., Any], every_log_line: io.StringIO
) -> None:
    client = keyed_client(make_client)
    response = client.post(PREDICT, data=b"x", headers={"Authorization": "Bearer wrong-key-1"})
    assert response.status_code == 401
    [refused] = [r for r in audit_lines(every_log_line) if r["action"] == "key_refused"]
    assert refused["client"] == "unknown"
    assert "wrong-key-1" not in every_log_line.getvalue()


def test_readyz_names_what_is_not_ready_but_not_why(make_client: Callable[..., Any]) -> None:
    client = make_client(preload_models='["no-such-model-secret-name"]')
    response = client.get("/readyz")
    assert response.status_code == 503
    assert set(response.json["checks"].values()) <= {"ok", "failed"}
    assert "no-such-model-secret-name" not in response.get_data(as_text=True)


def test_decoded_pixels_are_not_counted_twice(make_client: Callable[..., Any]) -> None:
    """The budget is charged once per scan: exactly the budget's worth of scans passes."""
    client = make_client(max_request_megapixels=str(2 * 512 * 512 / 1e6))
    two = [
        (io.BytesIO((IMAGES / n).read_bytes()), n) for n in ("big_normal_0.png", "big_normal_1.png")
    ]
    assert client.post(PREDICT, data={"file": two}).status_code == 200
