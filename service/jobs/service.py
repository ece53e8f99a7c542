"""JobService: the one object the training API (and the CLI, and tests) call for jobs."""

from __future__ import annotations

import logging

from models.spec import JobSpec
from service.config import TrainingSettings
from service.errors import Forbidden, ServiceUnavailable
from service.jobs.audit_store import AuditStore
from service.jobs.launchers.base import Launcher, make_launcher
from service.jobs.outcomes import OutcomeFigures, OutcomeStore
from service.jobs.schemas import JobCheck, JobView, ModelStanding
from service.jobs.state import IllegalTransition, Status
from service.jobs.store import JobNotFound, JobStore
from service.jobs.supervisor import Supervisor
from service.jobs.tenancy import check_publish, model_owner
from service.jobs.validation import check_uris

log = logging.getLogger(__name__)

__all__ = ["JobNotFound", "JobService", "JobView"]


class JobService:
    """Submit, read, list and cancel jobs; `start()` runs the supervisor in this process."""

    def __init__(self, settings: TrainingSettings, store: JobStore, launcher: Launcher) -> None:
        self.settings, self.store, self.launcher = settings, store, launcher
        self.supervisor = Supervisor(store, launcher, settings)
        self.audit_log = AuditStore(store.engine)
        self.outcomes = OutcomeStore(store.engine)
        self.outcome_figures = OutcomeFigures(self.outcomes)

    @classmethod
    def from_settings(cls, settings: TrainingSettings) -> JobService:
        """Open (and migrate) the job store and build the configured launcher."""
        return cls(settings, JobStore.open(settings.database_url), make_launcher(settings))

    def start(self) -> None:
        self.supervisor.start()

    def stop(self) -> None:
        """Stop supervising and close the launcher: Kubernetes Jobs keep running; local runners
        pause, their jobs queued to resume (`LocalLauncher.close`)."""
        self.supervisor.stop()
        for job_id, ref in self.launcher.close():
            self._pause_killed(job_id, ref)
        self.store.close()

    def _pause_killed(self, job_id: str, ref: str) -> None:
        """A runner killed for not pausing in time: its job is paused all the same (queued to
        resume, counted as a pause, not a failure), unless it has moved on meanwhile."""
        job = self.store.get(job_id)
        if job.status != Status.RUNNING or job.runner_ref != ref:
            return
        try:
            self.store.pause(job_id, job.attempts)
        except IllegalTransition:
            return
        why = "the runner did not pause in time and was killed; queued to resume"
        log.warning("job %s attempt %d: %s", job_id, job.attempts, why)
        self.supervisor.note(job, f"attempt {job.attempts}: {why}")

    def submit(
        self,
        spec: JobSpec,
        *,
        idempotency_key: str | None = None,
        actor: str = "anonymous",
        client: str | None = None,
        may_promote: bool = True,
    ) -> JobView:
        """Queue a job for `client` (default: the actor). The same key and spec return the
        same job; another spec is a Conflict. A `promote` needs `may_promote` (models:write),
        and the model must be the client's own, granted, or new."""
        client = client or actor
        spec = self._admitted(spec, client, may_promote)
        # A retry of an accepted request must not depend on the data still being there.
        if idempotency_key is None or self.store.find_by_key(idempotency_key, client) is None:
            check_uris(spec, self.settings)
        row, created = self.store.create(
            spec, idempotency_key=idempotency_key, actor=actor, client=client
        )
        if created:
            log.info("job %s queued for %s by %s", row.id, row.model_name, actor)
            self.supervisor.wake()
        return JobView.from_row(row)

    def dry_run(self, spec: JobSpec, *, client: str, may_promote: bool = True) -> JobCheck:
        """What `submit` would refuse of `spec`, raised as it would be, without queuing a job:
        a CI pipeline's check of a spec before it is merged (`?dry_run=true`)."""
        spec = self._admitted(spec, client, may_promote)
        check_uris(spec, self.settings)
        owner = model_owner(self.store, spec.model_name)
        model: ModelStanding = "new" if owner is None else "owned" if owner == client else "granted"
        return JobCheck(model_name=spec.model_name, model=model, spec=spec.model_dump(mode="json"))

    def _admitted(self, spec: JobSpec, client: str, may_promote: bool) -> JobSpec:
        """`spec` with absolute paths (the runner works in a folder of its own), once the
        client may run it: Forbidden for a promotion without the scope, or another's model."""
        if spec.promote is not None and not may_promote:
            raise Forbidden(
                "a job that promotes ('promote') needs the models:write scope, like moving an"
                " alias by hand"
            )
        check_publish(self.store, self.settings, client, spec.model_name)
        return spec.with_absolute_paths()

    def get(self, job_id: str, *, client: str | None = None) -> JobView:
        """The job; with `client`, only that client's (others' are not found)."""
        return JobView.from_row(self.store.get(job_id, client=client))

    def list(
        self,
        *,
        status: str | None = None,
        model_name: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
        client: str | None = None,
    ) -> tuple[list[JobView], str | None]:
        """Newest first; pass the returned cursor to get the next page (None: no more)."""
        rows, next_cursor = self.store.page(
            status=status, model_name=model_name, cursor=cursor, limit=limit, client=client
        )
        return [JobView.from_row(r) for r in rows], next_cursor

    def cancel(self, job_id: str, *, actor: str, client: str | None = None) -> JobView:
        """queued/running → cancelled (409 once finished or publishing); stops the runner.
        With `client`, only that client's job (another's is not found)."""
        before = self.store.get(job_id, client=client)
        row = self.store.cancel(
            job_id, error_reason="cancelled", error_detail=f"cancelled by {actor}"
        )
        if row.version is not None:  # re-queued after it took a number: give it back
            self.store.release_version(job_id)
        if before.status == Status.RUNNING or row.runner_ref:
            try:
                self.launcher.cancel(row)
            except Exception:
                log.exception("could not stop the runner of job %s; it stops itself", job_id)
        log.info("job %s cancelled by %s", job_id, actor)
        self.supervisor.wake()
        return self.get(job_id)

    def logs(self, job_id: str, *, tail: int | None = None, client: str | None = None) -> str:
        job = self.store.get(job_id, client=client)
        return self.launcher.logs(job, tail) or ""

    def check(self) -> None:
        """Readiness: raises ServiceUnavailable when the job store is not reachable."""
        try:
            self.store.check()
        except Exception as exc:
            raise ServiceUnavailable(f"job store not reachable: {type(exc).__name__}") from exc

    def job_counts(self) -> dict[str, int]:
        """Jobs per status, every status present (for Prometheus)."""
        return self.store.counts()
