"""Fixtures every test folder shares: the real data, a real S3 endpoint, real PostgreSQL."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


SHARED_DATA = Path("shared", "data", "pneumoniamnist")


def checkouts() -> list[Path]:
    """This checkout, then the local repository it was cloned from (`git clone . /tmp/x`),
    whose folder may sit beside `shared/` when this one does not."""
    found = [REPO]
    origin = subprocess.run(
        ["git", "-C", str(REPO), "config", "--get", "remote.origin.url"],
        capture_output=True, text=True, check=False,
    ).stdout.strip().removeprefix("file://")  # fmt: skip
    if origin and "://" not in origin and ":" not in origin.split("/", 1)[0]:  # a local path
        found.append((REPO / origin).resolve())
    return found


def data_roots(tmp_path: Path) -> str:
    """SCANTUNE_LOCAL_DATA_ROOTS for tests (issue 24: no local data is allowed by default):
    pytest's temporary folders and the shared data."""
    import json

    roots = [str(tmp_path.parent)] + [str(c.parent / SHARED_DATA) for c in checkouts()]
    return json.dumps(roots)


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    env = os.environ.get("SCANTUNE_TEST_DATA_DIR")
    candidates = [Path(env)] if env else [c.parent / SHARED_DATA for c in checkouts()]
    for path in candidates:
        if path.is_dir():
            return path
    looked = ", ".join(str(p) for p in candidates)
    pytest.fail(f"shared data not found at {looked}; set SCANTUNE_TEST_DATA_DIR")


@pytest.fixture(scope="session")
def pneumonia_npz(shared_data_dir: Path) -> Path:
    """The real PneumoniaMNIST train+validation file (28x28 chest X-rays)."""
    return shared_data_dir / "pneumoniamnist_trainval.npz"


@pytest.fixture(scope="session")
def pneumonia_small_npz(pneumonia_npz: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stratified slice (160 train, 64 val) of the real data, for quick trainings."""
    with np.load(pneumonia_npz) as data:
        arrays = {k: data[k] for k in data.files}
    rng = np.random.default_rng(0)
    out = {}
    for split, n in (("train", 160), ("val", 64)):
        labels = arrays[f"{split}_labels"].ravel()
        picks = np.concatenate(
            [rng.choice(np.flatnonzero(labels == c), n // 2, replace=False) for c in (0, 1)]
        )
        rng.shuffle(picks)
        out[f"{split}_images"] = arrays[f"{split}_images"][picks]
        out[f"{split}_labels"] = arrays[f"{split}_labels"][picks]
    path = tmp_path_factory.mktemp("data") / "pneumonia_small.npz"
    np.savez(path, **out)
    return path


@pytest.fixture(scope="session")
def fixture_images() -> Path:
    """tests/data/images: real scans from the shared set as PNG 8/16-bit, JPEG and DICOM."""
    return DATA / "images"


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's standalone S3 server on a loopback port; yields its endpoint URL."""
    port = free_port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        wait_for_port(port, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def s3_env(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """AWS credentials and endpoint for the moto server, in this process's environment."""
    values = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "SCANTUNE_S3_ENDPOINT_URL": moto_server,
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


@pytest.fixture
def s3_bucket(s3_env: dict[str, str]) -> str:
    """A fresh, empty bucket on the moto server; yields its name."""
    from models.uri import s3_client

    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_client(s3_env["SCANTUNE_S3_ENDPOINT_URL"]).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """The real PostgreSQL on this machine (SCANTUNE_TEST_POSTGRES_URL to override)."""
    url = os.environ.get("SCANTUNE_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
    except Exception as exc:
        pytest.fail(f"PostgreSQL not reachable at {url}: {exc}")
    finally:
        engine.dispose()
    return url


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh schema on the real PostgreSQL, dropped afterwards; yields a URL that uses it."""
    from sqlalchemy import create_engine, text

    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = create_engine(postgres_server_url)
    with engine.begin() as conn:
        conn.execute(text(f'create schema "{schema}"'))
    sep = "&" if "?" in postgres_server_url else "?"
    try:
        yield f"{postgres_server_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'drop schema "{schema}" cascade'))
        engine.dispose()


@dataclass(frozen=True)
class HospitalCA:
    """A certificate authority made with the openssl command for one test, and a way to issue
    server certificates from it."""

    folder: Path

    @classmethod
    def create(cls, folder: Path, name: str) -> HospitalCA:
        folder.mkdir()
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                 "-keyout", folder / "ca.key", "-out", folder / "ca.pem", "-subj", f"/CN={name}",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
        return cls(folder)

    @property
    def pem(self) -> str:
        return (self.folder / "ca.pem").read_text()

    def issue(self, *names: str, usage: str = "serverAuth") -> tuple[Path, Path]:
        """A certificate this CA signed for `names` (DNS names or IPs) and its key: PEM files.
        `usage` is the extended key usage: serverAuth, clientAuth or both, comma-separated."""
        tag = f"{usage}-" + "-".join(names).replace(":", "_").replace(",", "_")
        key, csr, cert = (self.folder / f"{tag}.{ext}" for ext in ("key", "csr", "pem"))
        alt = ",".join(f"IP:{n}" if n[0].isdigit() else f"DNS:{n}" for n in names)
        ext = self.folder / f"{tag}.ext"
        ext.write_text(f"subjectAltName={alt}\nextendedKeyUsage={usage}\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
                 "-subj", f"/CN={names[0]}")  # fmt: skip
        _openssl("x509", "-req", "-in", csr, "-CA", self.folder / "ca.pem",
                 "-CAkey", self.folder / "ca.key", "-CAcreateserial", "-days", "2",
                 "-out", cert, "-extfile", ext)  # fmt: skip
        return cert, key

    @property
    def pem_file(self) -> Path:
        return self.folder / "ca.pem"

    def server_context(self, *names: str) -> ssl.SSLContext:
        """A TLS server context whose certificate this CA signed for `names`."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*self.issue(*names))
        return context


def _openssl(*args: Any) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


@pytest.fixture
def hospital_ca(tmp_path: Path) -> HospitalCA:
    return HospitalCA.create(tmp_path / "ca", "scantune test hospital CA")
