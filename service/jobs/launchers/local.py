"""Local launcher: the job runner as a subprocess of the API, in its own session."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from service.config import TrainingSettings
from service.jobs.launchers.base import (
    Launcher,
    RunnerState,
    check_job_limits,
    child_env,
    tail_lines,
)
from service.jobs.tables import JobRow

LOG_FILE = "log.txt"
KILL_GRACE_S = 5.0
# How long runners get to pause when their API process stops (gunicorn waits 30 s, and a
# person pressing Ctrl-C far less): a runner that has not paused by then is killed, and the
# API process queues its job to resume as the runner would have. 2 s was too short on a
# loaded 2-core machine: a runner still writing its row (SQLite busy with the API's own
# writes) was killed before it logged the pause.
PAUSE_GRACE_S = 5.0


def job_dir(settings: TrainingSettings, job_id: str) -> Path:
    return Path(settings.work_dir) / job_id


class LocalLauncher(Launcher):
    """`python -m service.jobs.runner JOB_ID`, output appended to <work_dir>/<id>/log.txt."""

    name = "local"

    def __init__(self, settings: TrainingSettings) -> None:
        self.settings = settings
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()

    def launch(self, job: JobRow) -> str:
        check_job_limits(job, self.settings)
        folder = job_dir(self.settings, job.id)
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / LOG_FILE).open("ab") as log:
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            log.write(f"=== attempt {job.attempts} started {stamp}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                self.command(job),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=child_env(self.settings),
                cwd=folder,
                start_new_session=True,  # its own process group: cancel kills the whole tree
            )
        with self._lock:
            self._procs[job.id] = proc
        return str(proc.pid)

    def command(self, job: JobRow) -> list[str]:
        """The runner's command line."""
        return [sys.executable, "-m", "service.jobs.runner", job.id]

    def close(self) -> list[tuple[str, str]]:
        """Pause this process's runners: SIGINT stops each where it is, and it queues its job
        to resume from the last checkpoint. They are this process's children; left
        running they would outlive the service that watches them (Ctrl-C on `scantune up`).
        One still there after `PAUSE_GRACE_S` is killed, and returned for its job's pause."""
        with self._lock:
            procs = {job_id: p for job_id, p in self._procs.items() if p.poll() is None}
            self._procs.clear()
        for proc in procs.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGINT)
        deadline = time.monotonic() + PAUSE_GRACE_S
        while any(p.poll() is None for p in procs.values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        killed = []
        for job_id, proc in procs.items():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                killed.append((job_id, str(proc.pid)))
        return killed

    def status(self, job: JobRow) -> RunnerState:
        with self._lock:
            proc = self._procs.get(job.id)
        if proc is not None and str(proc.pid) == job.runner_ref:
            code = proc.poll()
            if code is None:
                return RunnerState("running")
            with self._lock:
                self._procs.pop(job.id, None)
            return RunnerState("exited", detail=_exit_detail(code))
        if not job.runner_ref:
            return RunnerState("unknown")
        # Launched by another API process on this host: all we can do is ask the kernel.
        return RunnerState("running") if _alive(int(job.runner_ref)) else RunnerState("exited")

    def cancel(self, job: JobRow) -> None:
        with self._lock:
            proc = self._procs.pop(job.id, None)
        if proc is not None:
            _stop_group(proc.pid, lambda: proc.poll() is not None)
            return
        if job.runner_ref and _alive(int(job.runner_ref)):
            pid = int(job.runner_ref)
            _stop_group(pid, lambda: not _alive(pid))

    def logs(self, job: JobRow, tail: int | None = None) -> str | None:
        path = job_dir(self.settings, job.id) / LOG_FILE
        if not path.is_file():
            return None
        return tail_lines(path.read_text(errors="replace"), tail)

    def housekeeping(self, running_ids: set[str]) -> None:
        """Reap exited runners of finished jobs, so no zombie processes pile up."""
        with self._lock:
            done = [
                job_id
                for job_id, proc in self._procs.items()
                if job_id not in running_ids and proc.poll() is not None
            ]
            for job_id in done:
                del self._procs[job_id]

    def tracked(self) -> set[str]:
        with self._lock:
            return set(self._procs)

    def running_pids(self) -> dict[str, int]:
        with self._lock:
            return {job_id: p.pid for job_id, p in self._procs.items() if p.poll() is None}


def _exit_detail(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"runner killed by {signal.Signals(-code).name}"
    return f"runner exited with status {code}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_group(pid: int, gone: Callable[[], bool]) -> None:
    """SIGTERM the runner's process group, SIGKILL it if it is still there after a grace."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
        os.killpg(pid, signal.SIGCONT)  # a stopped (hung) process only sees SIGTERM once resumed
    deadline = time.monotonic() + KILL_GRACE_S
    while time.monotonic() < deadline:
        if gone():
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
