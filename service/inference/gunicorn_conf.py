"""gunicorn configuration of the inference service (`scantune serve inference` passes it as
`--config python:service.inference.gunicorn_conf`).

It is `service.cores`' hooks (one sync worker per core: slots and busy flags), plus one more
job for the master before it forks: checking the settings (a bad value stops it with one
line naming the variable) and importing what every worker's `create_app` and first model
load import late (`service.inference.before_fork`). The workers then start with those
modules loaded instead of all importing them at once on a cold start, and share those pages
(measured in docs/benchmarks.md). Code changes therefore need a restart, not a HUP: a
container's code does not change under it.
"""

from __future__ import annotations

from typing import Any

from service import cores
from service.cores import child_exit, post_fork, post_request, pre_fork, pre_request
from service.gunicorn_errors import post_worker_init

__all__ = [
    "child_exit",
    "on_starting",
    "post_fork",
    "post_request",
    "post_worker_init",
    "pre_fork",
    "pre_request",
]


def on_starting(server: Any) -> None:
    from service.config import InferenceSettings, settings_or_exit
    from service.inference import before_fork

    cores.on_starting(server)
    before_fork(settings_or_exit(InferenceSettings, server.log, "inference"))
