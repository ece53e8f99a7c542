"""The training service: jobs and the model registry over HTTP.

gunicorn runs `service.training_api:create_app()` once per worker; each worker starts its own
job supervisor, which the job store makes safe to run in several processes at once.
"""

from __future__ import annotations

import atexit
import logging
from dataclasses import dataclass

from flask import Flask, current_app
from prometheus_client import Gauge

from service.config import TrainingSettings
from service.jobs.service import JobService
from service.registry import Registry
from service.storage import ArtifactStore, open_store
from service.training_api.encoding import FiniteJSONProvider
from service.web import add_readiness_check, create_base_app

log = logging.getLogger(__name__)
EXTENSION = "scantune"
JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")

JOBS_BY_STATE = Gauge(
    "scantune_jobs",
    "Training jobs in the job store, by state",
    ["state"],
    multiprocess_mode="mostrecent",
)


@dataclass(frozen=True)
class TrainingServices:
    """What the views reach through `current_app`: built once per process by `create_app`."""

    settings: TrainingSettings
    jobs: JobService
    store: ArtifactStore
    registry: Registry


def create_app(settings: TrainingSettings | None = None, *, start_supervisor: bool = True) -> Flask:
    """Build the training API; `start_supervisor=False` leaves queued jobs alone (tests)."""
    settings = settings or TrainingSettings()
    logging.basicConfig(level=settings.log_level.upper())
    app = create_base_app(__name__, settings, service="training")
    app.json = FiniteJSONProvider(app)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    store = open_store(
        settings.artifact_uri, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region
    )
    jobs = JobService.from_settings(settings)
    app.extensions[EXTENSION] = TrainingServices(settings, jobs, store, Registry(store))

    from service.training_api import jobs as jobs_views
    from service.training_api import models as models_views

    app.register_blueprint(jobs_views.bp)
    app.register_blueprint(models_views.bp)
    add_readiness_check(app, "database", jobs.check)
    add_readiness_check(app, "artifact_store", store.check)
    app.extensions.setdefault("scantune.metrics_hooks", []).append(
        lambda: _observe_job_counts(jobs)
    )
    if start_supervisor:
        jobs.start()
        atexit.register(jobs.stop)
    return app


def services() -> TrainingServices:
    """The current app's services (inside a request)."""
    found: TrainingServices = current_app.extensions[EXTENSION]
    return found


def _observe_job_counts(jobs: JobService) -> None:
    try:
        counts = jobs.job_counts()
    except Exception:  # the database is down: /readyz says so; /metrics still answers
        log.warning("could not count jobs for /metrics", exc_info=True)
        return
    for state in sorted({*JOB_STATES, *counts}):
        JOBS_BY_STATE.labels(state).set(counts.get(state, 0))
