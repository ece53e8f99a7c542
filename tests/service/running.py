"""`scantune up` (both services under gunicorn) started for a test, on free loopback ports."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from tests.conftest import REPO, free_port, wait_for_port


class Up:
    """`scantune up` in its own session, as a terminal runs it (Ctrl-C reaches its whole
    foreground process group); without keys in `env`, `--no-auth`."""

    def __init__(
        self,
        folder: Path,
        env: dict[str, str] | None = None,
        *,
        key: bool = False,
        data_roots: list[Path] | None = None,
    ) -> None:
        """`key`: let `scantune up` make and print an API key, as `make run` does;
        `data_roots`: its `--data-root` folders."""
        self.folder, self.extra_env, self.make_key = folder, env or {}, key
        self.data_roots = data_roots or []
        self.ports = free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.output = folder / "up.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports[0]}"

    @property
    def inference_url(self) -> str:
        return f"http://127.0.0.1:{self.ports[1]}"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCANTUNE_")}
        env |= {"PYTHONPATH": str(REPO), **self.extra_env}
        command = [sys.executable, "-m", "service.cli", "up"]
        if "SCANTUNE_API_KEYS" not in env and not self.make_key:
            command.append("--no-auth")
        ports = ["--training-port", str(self.ports[0]), "--inference-port", str(self.ports[1])]
        for root in self.data_roots:
            ports += ["--data-root", str(root)]
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
        return self._stopped_by(lambda pid: os.killpg(pid, signal.SIGINT))

    def terminate(self) -> float:
        """SIGTERM to `scantune up` alone, as a process manager stops it (systemd, `docker
        stop`); seconds until its whole group exited."""
        return self._stopped_by(lambda pid: os.kill(pid, signal.SIGTERM))

    def _stopped_by(self, send: Callable[[int], None]) -> float:
        assert self.proc is not None
        started = time.monotonic()
        send(self.proc.pid)
        self.proc.wait(timeout=60)
        while _group_alive(self.proc.pid) and time.monotonic() - started < 60:
            time.sleep(0.05)
        return time.monotonic() - started

    def kill(self) -> None:
        """Stop it as Ctrl-C does (its runners pause), then make sure."""
        if self.proc is not None and _group_alive(self.proc.pid):
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.ctrl_c()
        if self.proc is not None and _group_alive(self.proc.pid):
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def printed_key(self) -> str:
        """The API key `scantune up` printed."""
        found = re.search(r"export SCANTUNE_API_KEY=(\S+)", self.output.read_text())
        assert found, "scantune up printed no API key"
        return found.group(1)

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


def runner_pids(job_id: str) -> list[int]:
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


def wait(what: str, check: Any, timeout: float = 180.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")
