"""`scantune up` (what `make run` runs) stops on Ctrl-C within seconds, and a job it was
training is left to resume: the runner pauses, the job is queued, the next start resumes it
from its last checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import REPO, free_port, wait_for_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# gunicorn's graceful timeout is 30 s: a worker still there then is SIGKILLed. A clean stop
# is far below it; this bound leaves room for a loaded 2-core machine.
STOP_WITHIN_S = 10.0


class Up:
    """`scantune up --no-auth` in its own session, as a terminal runs it: Ctrl-C reaches
    its whole foreground process group."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ports = free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.output = folder / "up.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports[0]}"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCANTUNE_")}
        env |= {"PYTHONPATH": str(REPO), "SCANTUNE_HEARTBEAT_INTERVAL_S": "1"}
        command = [sys.executable, "-m", "service.cli", "up", "--no-auth"]
        ports = ["--training-port", str(self.ports[0]), "--inference-port", str(self.ports[1])]
        with self.output.open("ab") as out:
            self.proc = subprocess.Popen(
                command + ports,
                cwd=self.folder,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        for port in self.ports:
            wait_for_port(port, timeout=60, proc=self.proc)

    def ctrl_c(self) -> float:
        """SIGINT to the process group, as the terminal sends it; seconds until all exited."""
        assert self.proc is not None
        started = time.monotonic()
        os.killpg(self.proc.pid, signal.SIGINT)
        self.proc.wait(timeout=60)
        while _group_alive(self.proc.pid) and time.monotonic() - started < 60:
            time.sleep(0.05)
        return time.monotonic() - started

    def kill(self) -> None:
        if self.proc is not None and _group_alive(self.proc.pid):
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def job(self, job_id: str) -> dict[str, Any]:
        response = requests.get(f"{self.url}/v1/training-jobs/{job_id}", timeout=10)
        response.raise_for_status()
        found: dict[str, Any] = response.json()
        return found


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _runner_pids(job_id: str) -> list[int]:
    """Runner processes of the job, wherever they were reparented."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"service.jobs.runner" in cmdline and job_id.encode() in cmdline:
                pids.append(int(entry.name))
    return pids


def _wait(what: str, check: Any, timeout: float = 180.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    instance = Up(tmp_path)
    yield instance
    instance.kill()


def test_ctrl_c_stops_both_services_and_leaves_the_job_to_resume(
    up: Up, pneumonia_small_npz: Path
) -> None:
    data = up.folder / "data"
    data.mkdir()
    (data / "scans.npz").write_bytes(pneumonia_small_npz.read_bytes())
    up.start()
    spec = {
        "model_name": "chest",
        "dataset": {"uri": "data/scans.npz", "format": "npz"},  # relative, as in the README
        "image_size": 32,
        "epochs": 40,
        "recipe": {"batch_size": 16},
    }
    submitted = requests.post(f"{up.url}/v1/training-jobs", json=spec, timeout=10)
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    # Training, with a checkpoint behind it (one finished epoch).
    _wait("a finished epoch", lambda: up.job(job_id)["history"])

    took = up.ctrl_c()

    output = up.output.read_text()
    assert took < STOP_WITHIN_S, f"stopped in {took:.1f}s\n{output[-3000:]}"
    assert "SIGKILL" not in output and "Traceback" not in output, output[-3000:]
    assert _runner_pids(job_id) == [], "the job's runner outlived the service"
    job_log = (up.folder / "var" / "jobs" / job_id / "log.txt").read_text()
    assert "interrupted; queued to resume from its last checkpoint" in job_log

    up.start()
    resumed = _wait(
        "the job to resume",
        lambda: "resuming" in (up.folder / "var/jobs" / job_id / "log.txt").read_text(),
    )
    assert resumed
    job = up.job(job_id)
    assert job["status"] == "running" and job["attempts"] == 2, job
    assert up.ctrl_c() < STOP_WITHIN_S
