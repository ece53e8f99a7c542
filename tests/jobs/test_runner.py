"""The runner's bookkeeping without training: what it does with jobs it cannot run."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from models.spec import JobSpec
from service.config import TrainingSettings
from service.jobs.runner import EXIT_FAILED, EXIT_OK, JobRunner
from service.jobs.store import JobStore


def test_a_job_not_running_is_left_alone(
    store: JobStore,
    make_spec: Callable[..., JobSpec],
    settings_env: Callable[..., TrainingSettings],
) -> None:
    row, _ = store.create(make_spec())
    runner = JobRunner(settings_env(), row.id, store=store)
    assert runner.run() == EXIT_OK
    assert store.get(row.id).status == "queued"


def test_a_spec_that_no_longer_validates_fails_the_job(
    store: JobStore,
    make_spec: Callable[..., JobSpec],
    settings_env: Callable[..., TrainingSettings],
) -> None:
    row, _ = store.create(make_spec())
    store.claim_queued(1, launcher="local")
    store.set_fields(row.id, spec={**row.spec, "retired_field": 1})
    runner = JobRunner(settings_env(), row.id, store=store)
    assert runner.run() == EXIT_FAILED
    job = store.get(row.id)
    assert (job.status, job.error_reason) == ("failed", "invalid_spec")
    assert "retired_field" in (job.error_detail or "")


# Python source run from C (PyRun_String, as C extensions do: pybind11's py::exec), with the
# stop signal landing inside it; the runner catches the stop and exits with its own code.
STOP_INSIDE_PYRUN = """
import ctypes, sys
from service.jobs.stops import StopRequested, StopSignals
StopSignals(3600).install(sys.argv[1])
run = ctypes.pythonapi.PyRun_String
run.restype = ctypes.py_object
run.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.py_object, ctypes.py_object]
source = f"import os, signal, time; os.kill(os.getpid(), signal.{sys.argv[2]}); time.sleep(30)"
try:
    run(source.encode(), 257, {}, {})  # 257: Py_file_input
except StopRequested:
    sys.exit(1)
sys.exit(3)
"""


@pytest.mark.parametrize(("launcher", "sig"), [("local", "SIGINT"), ("kubernetes", "SIGTERM")])
def test_a_stop_inside_python_run_from_c_keeps_the_runners_exit_code(
    launcher: str, sig: str, tmp_path: Path
) -> None:
    """Run with -m, as the runner is: a KeyboardInterrupt through such code marks CPython to
    die by SIGINT at exit even when caught, so the pod ended -2 instead of the runner's 1 (seen
    in CI); a StopRequested does not."""
    (tmp_path / "stop_probe.py").write_text(STOP_INSIDE_PYRUN)
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-m", "stop_probe", launcher, sig],
        env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{root}"},
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr.decode()
