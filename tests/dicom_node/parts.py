"""The real parts the node's tests drive: Orthanc as the PACS, the node and the inference
service under gunicorn, and a pynetdicom modality sending re-UID'd fixture scans."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
from pydicom import Dataset, dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE

from service.commands.serve import gunicorn_command, service_env
from tests.conftest import DATA, free_port, wait_for_port

IMAGES = DATA / "images"
SOURCES = sorted(IMAGES.glob("*_rescale.dcm")) + sorted(IMAGES.glob("*_mono1.dcm"))
NODE_AE, MODALITY_AE, PACS_AE = "SCANTUNE", "MODALITY", "ORTHANC"
ORTHANC_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


def wait_until(check: Callable[[], Any], timeout: float, what: str, step: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout:.0f} s: {what}")
        time.sleep(step)


def make_study(count: int, *, modality: str = "CR", series: int = 1) -> list[Dataset]:
    """`count` instances of one new study (split over `series` series), each a fixture scan
    with UIDs of its own."""
    study = generate_uid()
    series_uids = [generate_uid() for _ in range(series)]
    out: list[Dataset] = []
    for i in range(count):
        ds = dcmread(SOURCES[i % len(SOURCES)])
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series_uids[i % series]
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.Modality, ds.PatientID, ds.StudyID, ds.AccessionNumber = modality, "P-1", "1", "A1"
        ds.StudyDate, ds.StudyTime, ds.InstanceNumber, ds.SeriesNumber = (
            "20261205",
            "1200",
            i + 1,
            1,
        )
        ds.ReferringPhysicianName = ""
        out.append(ds)
    return out


def send(port: int, datasets: list[Dataset], ae_title: str = MODALITY_AE, **kw: Any) -> list[int]:
    """C-STORE each data set over one association; the statuses answered."""
    ae = AE(ae_title=ae_title)
    for ds in datasets:
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AE, **kw)
    assert assoc.is_established, "the node refused the association"
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def store_in_pacs(url: str, datasets: list[Dataset]) -> None:
    """Store each data set in the Orthanc at `url` through its REST API, as if a modality had
    sent it there."""
    for ds in datasets:
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        requests.post(f"{url}/instances", data=out.getvalue(), timeout=10).raise_for_status()


class Orthanc:
    """Orthanc as a plain process on loopback ports; stop and start keep its storage."""

    def __init__(self, root: Path, node_port: int, users: dict[str, str] | None = None) -> None:
        self.root, self.http_port, self.dicom_port = root, free_port(), free_port()
        self.auth = next(iter(users.items())) if users else None
        root.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "test-pacs",
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": PACS_AE,
            "StorageDirectory": str(root / "storage"),
            "IndexDirectory": str(root / "index"),
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(users),
            "RegisteredUsers": users or {},
            "HttpServerEnabled": True,
            "Plugins": [ORTHANC_PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "DicomModalities": {"scantune": [NODE_AE, "127.0.0.1", node_port]},
        }
        (root / "orthanc.json").write_text(json.dumps(config))
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Orthanc:
        log = (self.root / "orthanc.log").open("ab")
        self.proc = subprocess.Popen(
            ["Orthanc", str(self.root / "orthanc.json")], stdout=log, stderr=log
        )
        wait_for_port(self.http_port, proc=self.proc)
        wait_for_port(self.dicom_port, proc=self.proc)
        wait_until(lambda: self._up(), 20, "Orthanc answers /system")
        return self

    def _up(self) -> bool:
        try:
            return requests.get(f"{self.url}/system", auth=self.auth, timeout=2).ok
        except requests.RequestException:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
        self.proc = None

    def reports(self, study_uid: str) -> list[Dataset]:
        """The SR instances Orthanc holds in the study (read back through its REST API)."""
        return self.instances(study_uid, "SR")

    def instances(self, study_uid: str, modality: str) -> list[Dataset]:
        """The instances of `modality` Orthanc holds in the study."""
        found = requests.post(
            f"{self.url}/tools/find",
            json={"Level": "Instance", "Query": {"StudyInstanceUID": study_uid,
                                                 "Modality": modality}},
            auth=self.auth,
            timeout=10,
        ).json()  # fmt: skip
        files = [
            requests.get(f"{self.url}/instances/{i}/file", auth=self.auth, timeout=10).content
            for i in found
        ]
        return [dcmread(io.BytesIO(data)) for data in files]

    def study_count(self) -> int:
        return len(requests.get(f"{self.url}/studies", auth=self.auth, timeout=10).json())


class Gunicorn:
    """One scantune service under gunicorn in a session of its own (SIGKILL takes it whole)."""

    def __init__(self, service: str, env: dict[str, str], root: Path, workers: int = 1) -> None:
        self.service, self.env, self.root, self.workers = service, env, root, workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port_dicom = 0  # the node's DICOM port
        self.port_hl7 = 0  # the node's HL7 port, when it takes orders

    def start(self, ready: str = "/readyz", timeout: float = 60) -> Gunicorn:
        self.root.mkdir(parents=True, exist_ok=True)
        metrics = self.root / f"metrics-{time.monotonic_ns()}"
        metrics.mkdir()
        env = {**os.environ, **self.env, "PROMETHEUS_MULTIPROC_DIR": str(metrics)}
        cmd = gunicorn_command(self.service, "127.0.0.1", self.port, workers=self.workers)
        log = (self.root / f"{self.service}.log").open("ab")
        self.proc = subprocess.Popen(
            cmd, env=service_env(self.service, env), stdout=log, stderr=log, start_new_session=True
        )
        wait_for_port(self.port, timeout=timeout, proc=self.proc)
        wait_until(lambda: self._ready(ready), timeout, f"{self.service} ready")
        return self

    def _ready(self, path: str) -> bool:
        try:
            return requests.get(self.url + path, timeout=2).ok
        except requests.RequestException:
            return False

    def kill(self) -> None:
        """SIGKILL the master and its worker at once: no clean-up of any kind."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples in /metrics whose labels include `labels`."""
        from prometheus_client.parser import text_string_to_metric_families

        text = requests.get(f"{self.url}/metrics", timeout=5).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    def log_text(self) -> str:
        return (self.root / f"{self.service}.log").read_text(errors="replace")

    def items(self, path: str, key: str) -> list[dict[str, Any]]:
        """The `items` of a listing of the node's API (/v1/series, /v1/orders) as `key` sees it."""
        answer = requests.get(
            f"{self.url}{path}", headers={"Authorization": f"Bearer {key}"}, timeout=10
        )
        assert answer.status_code == 200, answer.text
        found: list[dict[str, Any]] = answer.json()["items"]
        return found


@contextmanager
def node_over_http(folder: Path, keys: dict[str, list[str]], studies: int = 1) -> Iterator[str]:
    """The node's app (the SCP and worker not started) on a thread over real HTTP, its keys
    `{name: scopes}` (each key's secret is "<name>-secret"), holding `studies` two-instance
    studies sent by STOW-RS; yields its base URL."""
    from werkzeug.serving import make_server

    from service.auth import hash_key
    from service.config import DicomNodeSettings
    from service.dicom_node.app import create_app
    from tests.dicom_node.test_app import encoded, multipart, post

    entries = [{"name": n, "sha256": hash_key(f"{n}-secret"), "scopes": s} for n, s in keys.items()]
    stow = {"name": "stow", "sha256": hash_key("stow-secret"), "scopes": ["predict"]}
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{folder / 'node.db'}",
        "dicom_spool_dir": folder / "spool",
        "dicom_routes": [{"model": "chest-xray"}],
        "api_keys": [*entries, stow],
    }
    settings = DicomNodeSettings(**values)
    node = create_app(settings, start=False)
    for _ in range(studies):
        study = make_study(2)
        answer = post(
            node.test_client(), *multipart(*(encoded(ds) for ds in study)), key="stow-secret"
        )
        assert answer.status_code == 200, answer.get_data(as_text=True)
    server = make_server("127.0.0.1", 0, node, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
