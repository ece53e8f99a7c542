"""gunicorn configuration of the training service (`scantune serve training` passes it as
`--config python:service.training_api.gunicorn_conf`).

The master checks the settings before it forks: a bad SCANTUNE_* value stops it with one
line naming the variable, instead of a traceback from every worker and gunicorn's "Worker
failed to boot".
"""

from __future__ import annotations

from typing import Any

from service.gunicorn_errors import post_worker_init

__all__ = ["on_starting", "post_worker_init", "worker_int"]


def on_starting(server: Any) -> None:
    from service.config import TrainingSettings, settings_or_exit

    settings_or_exit(TrainingSettings, server.log, "training")


def worker_int(worker: Any) -> None:
    """A worker's quick quit (Ctrl-C) begins: its job supervisor launches nothing more. The
    workers' runners are paused at exit (`JobService.stop`), each queueing its job to resume;
    a supervisor still running while its own worker's quit unwinds could claim such a job and
    start a runner that this exit then stops during its start-up, costing the job an attempt."""
    from service.training_api.context import EXTENSION

    services = getattr(getattr(worker, "wsgi", None), "extensions", {}).get(EXTENSION)
    if services is not None:
        services.jobs.supervisor.halt()
