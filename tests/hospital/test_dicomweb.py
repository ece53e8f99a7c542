"""Fetching by UID from a real PACS (Orthanc over DICOMweb), storing back, and its failures."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from service.errors import BadGateway, GatewayTimeout, NotFound, PayloadTooLarge
from service.hospital.dicomweb import DicomwebConfig, DicomwebRef, Pacs
from service.hospital.results import ReportSettings, ScanResult
from service.hospital.sr import build_sr
from tests.conftest import free_port
from tests.hospital.conftest import Orthanc
from tests.hospital.test_sr import MODEL

LIMITS = {"max_files": 8, "max_bytes": 32 * 2**20}


def _pacs(orthanc: Orthanc, **kwargs: object) -> Pacs:
    user, password = orthanc.auth
    options = {"username": user, "password": password, "timeout_s": 5.0, **kwargs}
    return Pacs(DicomwebConfig(orthanc.dicomweb, **options))  # type: ignore[arg-type]


def test_a_study_series_and_instance_are_fetched_by_uid(
    orthanc: Orthanc, study: Callable[..., list[Path]]
) -> None:
    paths = study()
    orthanc.upload(paths)
    sources = [pydicom.dcmread(p) for p in paths]
    uid = str(sources[0].StudyInstanceUID)
    whole = _pacs(orthanc).fetch(DicomwebRef(study_instance_uid=uid), **LIMITS)
    assert sorted(f.name for f in whole) == sorted(str(s.SOPInstanceUID) for s in sources)
    fetched = pydicom.dcmread(__import__("io").BytesIO(whole[0].data))
    original = next(s for s in sources if s.SOPInstanceUID == fetched.SOPInstanceUID)
    assert fetched.PixelData == original.PixelData
    one = DicomwebRef(
        study_instance_uid=uid,
        series_instance_uid=str(sources[1].SeriesInstanceUID),
        sop_instance_uid=str(sources[1].SOPInstanceUID),
    )
    assert [f.name for f in _pacs(orthanc).fetch(one, **LIMITS)] == [sources[1].SOPInstanceUID]


def test_the_sr_is_stored_in_its_study(orthanc: Orthanc, study: Callable[..., list[Path]]) -> None:
    paths = study()
    orthanc.upload(paths)
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    results = [ScanResult("normal", {"normal": 0.5, "pneumonia": 0.5})] * 2
    sr = build_sr(sources, results, MODEL, ReportSettings())
    _pacs(orthanc).store(sr)
    found = orthanc.qido(f"studies/{sources[0].StudyInstanceUID}/instances", Modality="SR")
    assert [i["00080018"]["Value"][0] for i in found] == [sr.SOPInstanceUID]
    # Fetching the study again classifies its images, not the report stored beside them.
    again = _pacs(orthanc).fetch(DicomwebRef(study_instance_uid=sr.StudyInstanceUID), **LIMITS)
    assert sorted(f.name for f in again) == sorted(str(s.SOPInstanceUID) for s in sources)


def test_an_unknown_uid_is_a_404_naming_it(orthanc: Orthanc) -> None:
    uid = generate_uid()
    with pytest.raises(NotFound, match=uid):
        _pacs(orthanc).fetch(DicomwebRef(study_instance_uid=uid), **LIMITS)


def test_more_instances_than_allowed_is_a_413(
    orthanc: Orthanc, study: Callable[..., list[Path]]
) -> None:
    paths = study()
    orthanc.upload(paths)
    uid = str(pydicom.dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)
    with pytest.raises(PayloadTooLarge, match="more than 1 instances"):
        _pacs(orthanc).fetch(
            DicomwebRef(study_instance_uid=uid), max_files=1, max_bytes=LIMITS["max_bytes"]
        )
    with pytest.raises(PayloadTooLarge, match="upload limit"):
        _pacs(orthanc).fetch(DicomwebRef(study_instance_uid=uid), max_files=8, max_bytes=1000)


def test_wrong_credentials_are_a_502(orthanc: Orthanc, tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("not-the-password\n")
    pacs = _pacs(orthanc, password=None, password_file=secret)
    with pytest.raises(BadGateway, match="answered 401"):
        pacs.fetch(DicomwebRef(study_instance_uid=generate_uid()), **LIMITS)


def test_a_pacs_that_is_down_is_a_502() -> None:
    pacs = Pacs(DicomwebConfig(f"http://127.0.0.1:{free_port()}/dicom-web", timeout_s=2))
    with pytest.raises(BadGateway, match="cannot be reached"):
        pacs.fetch(DicomwebRef(study_instance_uid="1.2.3"), **LIMITS)


def test_a_pacs_that_never_answers_is_a_504(silent_server: str) -> None:
    pacs = Pacs(DicomwebConfig(silent_server, timeout_s=0.5))
    with pytest.raises(GatewayTimeout, match=r"0\.5 s"):
        pacs.fetch(DicomwebRef(study_instance_uid="1.2.3"), **LIMITS)


def test_a_pacs_that_trickles_its_answer_is_a_504_at_the_deadline(trickling_server: str) -> None:
    pacs = Pacs(DicomwebConfig(trickling_server, timeout_s=1.0, deadline_s=1.5))
    started = time.monotonic()
    with pytest.raises(GatewayTimeout, match=r"within 1\.5 s"):
        pacs.fetch(DicomwebRef(study_instance_uid="1.2.3"), **LIMITS)
    assert time.monotonic() - started < 3.0  # not the minutes the trickle would take


def test_a_bearer_token_is_read_from_its_file_at_each_request(tmp_path: Path) -> None:
    """A loopback DICOMweb stand-in that records the Authorization header it is sent (Orthanc
    knows no bearer tokens); a rotated secret file is picked up without a restart."""
    import http.server
    import threading

    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            self.send_response(204)  # QIDO-RS: no match
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    token = tmp_path / "token"
    pacs = Pacs(DicomwebConfig(f"http://127.0.0.1:{server.server_address[1]}", token_file=token))
    try:
        for value in ("first-token", "rotated-token"):
            token.write_text(f"{value}\n")
            with pytest.raises(NotFound):
                pacs.fetch(DicomwebRef(study_instance_uid="1.2.3"), **LIMITS)
    finally:
        server.shutdown()
        server.server_close()
    assert seen == ["Bearer first-token", "Bearer rotated-token"]
