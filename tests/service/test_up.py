"""`scantune up` (what `make run` runs) stops on Ctrl-C or SIGTERM within seconds, and a job
it was training is left to resume: the runner pauses, the job is queued, the next start
resumes it from its last checkpoint."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.service.running import Up, runner_pids, wait

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# gunicorn's graceful timeout is 30 s: a worker still there then is SIGKILLed. A clean stop
# is far below it; this bound leaves room for a loaded 2-core machine.
STOP_WITHIN_S = 10.0


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    instance = Up(tmp_path, {"SCANTUNE_HEARTBEAT_INTERVAL_S": "1"})
    yield instance
    instance.kill()


@pytest.mark.parametrize(
    "stop",
    [
        "ctrl_c",
        # A process manager's stop (systemd, `docker stop`): gunicorn's graceful path, where
        # none of its hooks runs at the signal (the training config wraps the workers' handler).
        "terminate",
    ],
)
def test_a_stop_ends_both_services_and_leaves_the_job_to_resume(
    up: Up, pneumonia_small_npz: Path, stop: str
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
    wait("a finished epoch", lambda: up.job(job_id)["history"])

    took = getattr(up, stop)()

    output = up.output.read_text()
    assert took < STOP_WITHIN_S, f"stopped in {took:.1f}s\n{output[-3000:]}"
    assert "SIGKILL" not in output and "Traceback" not in output, output[-3000:]
    assert runner_pids(job_id) == [], "the job's runner outlived the service"
    job_log = (up.folder / "var" / "jobs" / job_id / "log.txt").read_text()
    assert "interrupted; queued to resume from its last checkpoint" in job_log

    up.start()
    resumed = wait(
        "the job to resume",
        lambda: "resuming" in (up.folder / "var/jobs" / job_id / "log.txt").read_text(),
    )
    assert resumed
    job = up.job(job_id)
    # The stop paused the job: an attempt, but not a failure counted against its retries.
    assert job["status"] == "running" and (job["attempts"], job["pauses"]) == (2, 1), job
    assert up.ctrl_c() < STOP_WITHIN_S
