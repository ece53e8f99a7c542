"""Fixtures for the jobs backend: a store on SQLite and on the real PostgreSQL, settings,
specs on the real data slice, and a loopback HTTP receiver for webhooks."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from models.spec import JobSpec
from service.config import TrainingSettings
from service.jobs.launchers.local import LocalLauncher
from service.jobs.schemas import JobView
from service.jobs.service import JobService
from service.jobs.store import JobStore
from tests.conftest import data_roots


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The job store URL: a SQLite file, or a fresh schema on the real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(db_url: str) -> Iterator[JobStore]:
    job_store = JobStore.open(db_url)
    yield job_store
    job_store.close()


@pytest.fixture
def make_spec(tmp_path: Path) -> Callable[..., JobSpec]:
    """A valid spec; the dataset file exists (an empty placeholder unless `uri` is given)."""
    placeholder = tmp_path / "placeholder.npz"
    placeholder.write_bytes(b"")

    def build(**overrides: Any) -> JobSpec:
        data: dict[str, Any] = {
            "model_name": "chest-xray",
            "dataset": {"uri": str(placeholder), "format": "npz"},
            "image_size": 32,
            "epochs": 1,
        }
        data.update(overrides)
        return JobSpec.model_validate(data)

    return build


@pytest.fixture
def settings_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., TrainingSettings]:
    """TrainingSettings read from SCANTUNE_* variables, as in production."""

    def build(**values: Any) -> TrainingSettings:
        defaults: dict[str, Any] = {
            "database_url": f"sqlite:///{tmp_path / 'jobs.db'}",
            "work_dir": tmp_path / "work",
            "artifact_uri": (tmp_path / "artifacts").as_uri(),
            "auth_disabled": True,
            "local_data_roots": json.loads(data_roots(tmp_path)),
            "webhook_allowed_hosts": ["127.0.0.1"],
        }
        for key, value in {**defaults, **values}.items():
            text = json.dumps(value) if isinstance(value, list | dict) else str(value)
            monkeypatch.setenv(f"SCANTUNE_{key.upper()}", text)
        return TrainingSettings()

    return build


class Receiver:
    """A real HTTP server on loopback that records POSTs and answers from a script."""

    def __init__(
        self,
        statuses: list[int],
        location: str | None = None,
        tls: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.statuses = list(statuses)
        self.location = location  # sent with a 3xx answer
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append((dict(self.headers), body))
                code = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(code)
                if receiver.location and 300 <= code < 400:
                    self.send_header("Location", receiver.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://{host}:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def start(
        statuses: list[int] | None = None,
        location: str | None = None,
        tls: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
    ) -> Receiver:
        made.append(Receiver(statuses or [], location, tls, host))
        return made[-1]

    yield start
    for r in made:
        r.close()


@pytest.fixture
def job_service(
    settings_env: Callable[..., TrainingSettings],
) -> Iterator[Callable[..., JobService]]:
    """Build a started JobService from settings; stops it and kills leftover runners after."""
    made: list[JobService] = []

    def build(**values: Any) -> JobService:
        fast = {
            "supervisor_interval_s": 0.2,
            "heartbeat_interval_s": 0.5,
            "heartbeat_timeout_s": 30,
            "webhook_backoff_s": 0.05,
        }
        service = JobService.from_settings(settings_env(**{**fast, **values}))
        service.start()
        made.append(service)
        return service

    yield build
    for service in made:
        launcher = service.launcher
        if isinstance(launcher, LocalLauncher):
            for pid in launcher.running_pids().values():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        service.stop()


def wait_for(
    service: JobService,
    job_id: str,
    done: Callable[[JobView], bool],
    *,
    timeout: float = 120.0,
) -> JobView:
    """Poll the job until `done(view)`; fails with the job's log when it times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = service.get(job_id)
        if done(view):
            return view
        time.sleep(0.1)
    raise AssertionError(
        f"job {job_id} still {view.status}/{view.phase} after {timeout}s\n"
        + service.logs(job_id, tail=60)
    )


def finished(view: JobView) -> bool:
    return view.status in ("succeeded", "failed", "cancelled")
