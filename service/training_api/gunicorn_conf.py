"""gunicorn configuration of the training service (`scantune serve training` passes it as
`--config python:service.training_api.gunicorn_conf`).

The master checks the settings before it forks: a bad SCANTUNE_* value stops it with one
line naming the variable, instead of a traceback from every worker and gunicorn's "Worker
failed to boot".
"""

from __future__ import annotations

from typing import Any

from service.gunicorn_errors import post_worker_init

__all__ = ["on_starting", "post_worker_init"]


def on_starting(server: Any) -> None:
    from service.config import TrainingSettings, settings_or_exit

    settings_or_exit(TrainingSettings, server.log, "training")
