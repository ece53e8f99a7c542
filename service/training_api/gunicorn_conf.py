"""gunicorn configuration of the training service (`scantune serve training` passes it as
`--config python:service.training_api.gunicorn_conf`).

The master checks the settings before it forks: a bad SCANTUNE_* value stops it with one
line naming the variable, instead of a traceback from every worker and gunicorn's "Worker
failed to boot".
"""

from __future__ import annotations

import signal
from typing import Any

from service import gunicorn_errors

__all__ = ["on_starting", "post_worker_init", "worker_int"]


def on_starting(server: Any) -> None:
    from service.config import TrainingSettings, settings_or_exit

    settings_or_exit(TrainingSettings, server.log, "training")


def post_worker_init(worker: Any) -> None:
    """Both services' worker hook, and a graceful stop (SIGTERM: `kill` of the master, a pod's
    termination, fewer workers) halts the supervisor at the signal as a quick quit does
    (`worker_int`). gunicorn has no hook at SIGTERM: the worker only leaves its loop once its
    requests are answered, and a supervisor ticking until then could claim a job that another
    worker's runner has just paused. Halting sets two `threading.Event`s, which only the
    supervisor's thread and request threads ever hold, never the signal's main thread."""
    gunicorn_errors.post_worker_init(worker)
    graceful = signal.getsignal(signal.SIGTERM)

    def handle_exit(sig: int, frame: Any) -> None:
        _halt_supervisor(worker)
        if callable(graceful):
            graceful(sig, frame)

    signal.signal(signal.SIGTERM, handle_exit)


def worker_int(worker: Any) -> None:
    """A worker's quick quit (Ctrl-C) begins: its job supervisor launches nothing more. The
    workers' runners are paused at exit (`JobService.stop`), each queueing its job to resume;
    a supervisor still running while its own worker's quit unwinds could claim such a job and
    start a runner that this exit then stops during its start-up, costing the job an attempt."""
    _halt_supervisor(worker)


def _halt_supervisor(worker: Any) -> None:
    from service.training_api.context import EXTENSION

    services = getattr(getattr(worker, "wsgi", None), "extensions", {}).get(EXTENSION)
    if services is not None:
        services.jobs.supervisor.halt()
