"""A worker stopped right after it starts exits cleanly, even while the all-core onnxruntime
session of a preloaded model is still being built (exiting mid-build aborts the process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from service.config import InferenceSettings
from service.inference import manager as manager_module
from service.inference import sessions
from service.inference.manager import ModelManager
from service.registry import Registry
from tests.inference.conftest import MODEL, REPO

# The app as gunicorn builds it; the interpreter exits after `delay` s and atexit stops it.
WORKER = """
import sys, time
from service.inference import create_app
create_app()
time.sleep(float(sys.argv[1]))
"""


@pytest.mark.parametrize("delay", [0.0, 0.0, 0.05, 0.1, 0.2])
def test_a_worker_stopped_while_loading_exits_cleanly(registry: Registry, delay: float) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "SCANTUNE_ARTIFACT_URI": registry.store.uri,
        "SCANTUNE_PRELOAD_MODELS": json.dumps([MODEL]),
        # runner threads, so the all-core session builds in the background
        "SCANTUNE_BATCH_RUNNERS": "2",
        "SCANTUNE_ALIAS_POLL_INTERVAL_S": "3600",
        "SCANTUNE_AUTH_DISABLED": "true",
    }
    done = subprocess.run(
        [sys.executable, "-c", WORKER, str(delay)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "terminate called" not in done.stderr, done.stderr
    assert done.returncode == 0, done.stderr


def test_an_all_core_session_finished_after_stop_is_not_attached(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()
    create_session = sessions.create_session

    def held_solo(onnx: bytes, settings: InferenceSettings, threads: int) -> Any:
        if threads != 1:  # the all-core session; runner sessions are single-threaded
            gate.wait(10)
        return create_session(onnx, settings, threads)

    monkeypatch.setattr(sessions, "create_session", held_solo)
    monkeypatch.setattr(manager_module, "STOP_WAIT_S", 0.2)
    monkeypatch.setenv("SCANTUNE_ARTIFACT_URI", registry.store.uri)
    monkeypatch.setenv("SCANTUNE_BATCH_RUNNERS", "2")
    manager = ModelManager(registry, InferenceSettings())
    model = manager.get(MODEL)
    started = time.monotonic()
    manager.stop()  # gives up on the held build after its bounded wait
    assert time.monotonic() - started < 5
    gate.set()
    for thread in threading.enumerate():
        if thread.name == f"solo-{MODEL}-1":
            thread.join(10)
    assert model.solo is None
