"""The training service's own command on a fresh machine: no database file yet, several
workers creating it at once (what `make run` does the first time)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import requests

from service.commands.serve import gunicorn_command, service_env
from tests.conftest import free_port, wait_for_port

pytestmark = [pytest.mark.slow]


@pytest.mark.parametrize("attempt", range(2))
def test_workers_starting_together_on_a_new_sqlite_file_all_boot(
    tmp_path: Path, attempt: int
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "SCANTUNE_DATABASE_URL": f"sqlite:///{tmp_path / 'var' / 'scantune.db'}",
        "SCANTUNE_ARTIFACT_URI": str(tmp_path / "artifacts"),
        "SCANTUNE_WORK_DIR": str(tmp_path / "work"),
        "SCANTUNE_AUTH_DISABLED": "true",
    }
    cmd = gunicorn_command("training", "127.0.0.1", port, workers=4, threads=1)
    log = (tmp_path / "gunicorn.log").open("wb")
    proc = subprocess.Popen(cmd, env=service_env("training", env), stdout=log, stderr=log)
    try:
        wait_for_port(port, proc=proc)
        deadline = time.monotonic() + 30
        ready = 0
        while ready < 8:  # several in a row: every worker answered, none failed to boot
            assert proc.poll() is None, (tmp_path / "gunicorn.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the service never became ready"
            ok = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5).ok
            ready = ready + 1 if ok else 0
            time.sleep(0.05)
        text = (tmp_path / "gunicorn.log").read_text()
        assert "database is locked" not in text and "Worker failed to boot" not in text
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
