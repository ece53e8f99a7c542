"""Fixtures for hospital formats: real X-ray DICOM fixtures placed in studies of their own."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from pydicom.uid import generate_uid

from tests.conftest import free_port, wait_for_port

IMAGES = Path(__file__).resolve().parents[1] / "data" / "images"
SCANS = ("normal_0_mono1.dcm", "pneumonia_0_mono1.dcm")


def in_study(
    name: str, study_uid: str, *, modality: str | None = None, **extra: str
) -> pydicom.Dataset:
    """The fixture scan `name` as an instance of study `study_uid`, with fresh series and
    instance UIDs (the fixtures carry a patient but no study)."""
    ds = pydicom.dcmread(IMAGES / name)
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "101500", "7", "A1"
    if modality:
        ds.Modality = modality
    for key, value in extra.items():
        setattr(ds, key, value)
    return ds


@pytest.fixture
def study(tmp_path: Path) -> Callable[..., list[Path]]:
    """Write scans of one new study to files; returns their paths."""

    def write(names: tuple[str, ...] = SCANS, **kwargs: str) -> list[Path]:
        uid = generate_uid()
        paths = []
        for i, name in enumerate(names):
            path = tmp_path / f"{uid[-8:]}-{i}.dcm"
            in_study(name, uid, **kwargs).save_as(path, enforce_file_format=True)
            paths.append(path)
        return paths

    return write


# --- a real PACS: Orthanc with its DICOMweb plugin, on free loopback ports --------------------

ORTHANC_USER = ("scantune", "orthanc-test-password")


@dataclass(frozen=True)
class Orthanc:
    url: str  # the REST root
    dicomweb: str  # the DICOMweb root
    auth: tuple[str, str]

    def upload(self, paths: list[Path]) -> None:
        for path in paths:
            response = requests.post(
                f"{self.url}/instances", data=path.read_bytes(), auth=self.auth, timeout=10
            )
            response.raise_for_status()

    def qido(self, path: str, **params: str) -> list[dict[str, Any]]:
        response = requests.get(
            f"{self.dicomweb}/{path}", params=params, auth=self.auth, timeout=10
        )
        response.raise_for_status()
        return response.json() if response.content else []


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """Debian's Orthanc as a plain process, storage in a temporary folder, basic auth on."""
    binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    if not Path(binary).exists():
        pytest.skip("Orthanc is installed by .ci/run (apt: orthanc orthanc-dicomweb)")
    root = tmp_path_factory.mktemp("orthanc")
    http, dicom = free_port(), free_port()
    config = {
        "Name": "scantune-test",
        "HttpPort": http,
        "DicomPort": dicom,
        "DicomAet": "ORTHANCTEST",
        "StorageDirectory": str(root / "storage"),
        "IndexDirectory": str(root / "index"),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {ORTHANC_USER[0]: ORTHANC_USER[1]},
        "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "HttpTimeout": 10,
    }
    (root / "orthanc.json").write_text(json.dumps(config))
    log = (root / "orthanc.log").open("wb")
    proc = subprocess.Popen([binary, str(root / "orthanc.json")], stdout=log, stderr=log)
    try:
        wait_for_port(http, timeout=30, proc=proc)
        url = f"http://127.0.0.1:{http}"
        deadline = time.monotonic() + 30
        while requests.get(f"{url}/system", auth=ORTHANC_USER, timeout=5).status_code != 200:
            if time.monotonic() > deadline:
                raise TimeoutError("Orthanc did not come up")
            time.sleep(0.1)
        yield Orthanc(url, f"{url}/dicom-web", ORTHANC_USER)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A loopback server that accepts connections and never answers: a PACS too slow."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/dicom-web"
    listener.close()


@pytest.fixture
def trickling_server() -> Iterator[str]:
    """A loopback server that answers every request at once, then sends its body a byte every
    0.2 s: each read comes well within any timeout, the whole answer takes minutes."""
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\n"
            conn.sendall(head + b"Content-Length: 1000\r\n\r\n[")
            while not stop.wait(0.2):
                try:
                    conn.sendall(b" ")
                except OSError:
                    return

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/dicom-web"
    stop.set()
    listener.close()
