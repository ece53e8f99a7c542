"""The training service: jobs and the model registry over HTTP.

gunicorn runs `service.training_api:create_app()` once per worker; each worker starts its own
job supervisor, which the job store makes safe to run in several processes at once.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Callable

from flask import Flask, Response, g

from service.audit import EXTENSION as AUDIT_EXTENSION
from service.audit import AuditTrail
from service.config import TrainingSettings
from service.errors import problem
from service.jobs.service import JobService
from service.logs import configure_logging
from service.registry import Registry
from service.storage import StoreError, open_store
from service.training_api.context import EXTENSION, TrainingServices, services
from service.training_api.metrics import observe_jobs
from service.version_notes import VersionNotes
from service.web import add_readiness_check, create_base_app
from service.withdrawals import Withdrawals

__all__ = ["EXTENSION", "TrainingServices", "create_app", "services"]

log = logging.getLogger(__name__)


def create_app(settings: TrainingSettings | None = None, *, start_supervisor: bool = True) -> Flask:
    """Build the training API; `start_supervisor=False` leaves queued jobs alone (tests)."""
    settings = settings or TrainingSettings()
    configure_logging(settings)
    app = create_base_app(__name__, settings, service="training")
    store = open_store(
        settings.artifact_uri, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region
    )
    jobs = JobService.from_settings(settings)
    registry = Registry(store, access_recheck_s=settings.access_recheck_s)
    withdrawals = Withdrawals(store, settings.access_recheck_s)
    app.extensions[EXTENSION] = TrainingServices(
        settings, jobs, store, registry, withdrawals, VersionNotes(store)
    )
    app.extensions[AUDIT_EXTENSION] = AuditTrail(jobs.audit_log.add)

    from service.training_api import audit as audit_views
    from service.training_api import caveats as caveats_views
    from service.training_api import comparison as comparison_views
    from service.training_api import jobs as jobs_views
    from service.training_api import models as models_views
    from service.training_api import outcome_trend as trend_views
    from service.training_api import outcomes as outcomes_views
    from service.training_api import results as results_views
    from service.training_api import ui as ui_views

    app.register_blueprint(jobs_views.bp)
    app.register_blueprint(models_views.bp)
    app.register_blueprint(outcomes_views.bp)
    app.register_blueprint(trend_views.bp)
    app.register_blueprint(caveats_views.bp)
    app.register_blueprint(comparison_views.bp)
    app.register_blueprint(results_views.bp)
    app.register_blueprint(ui_views.bp)
    app.register_blueprint(audit_views.bp)
    add_readiness_check(app, "database", jobs.check)
    add_readiness_check(app, "artifact_store", store.check)
    app.extensions.setdefault("scantune.metrics_hooks", []).append(lambda: observe_jobs(jobs))
    register_dependency_errors(app)
    if start_supervisor:
        jobs.start()
        atexit.register(jobs.stop)
        threading.Thread(
            target=outcomes_views.keep_observing,
            args=(jobs.outcome_figures, registry),
            daemon=True,
        ).start()
    return app


def register_dependency_errors(app: Flask) -> None:
    """A database or artifact store that cannot be reached is a 503 to retry, not a 500."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    def unavailable(what: str) -> Callable[[Exception], Response]:
        def handle(exc: Exception) -> Response:
            log.warning("%s unavailable (request %s): %s", what, g.get("request_id"), exc)
            return problem(
                503,
                "Service unavailable",
                f"the {what} cannot be reached; retry shortly",
                headers={"Retry-After": "5"},
            )

        return handle

    app.register_error_handler(OperationalError, unavailable("job database"))
    app.register_error_handler(InterfaceError, unavailable("job database"))
    app.register_error_handler(StoreError, unavailable("artifact store"))
