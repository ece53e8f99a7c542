"""The supervisor: a thread in each API process that starts queued jobs and reaps dead ones.

Every `supervisor_interval_s` it (1) looks at each running job: a runner the launcher reports
gone or killed, or whose heartbeat is older than `heartbeat_timeout_s`, is re-queued to resume
from its checkpoint while `attempts - pauses <= max_retries` (a pause is an attempt that ended
because its service stopped), else failed with a reason; (2) starts queued jobs while slots
are free; (3) sends webhooks no runner could send (cancellations, lost runners). Every change
is a conditional update, so two API processes can both run one.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from datetime import timedelta

from service.audit import AuditRecord, AuditTrail
from service.config import TrainingSettings
from service.jobs.audit_store import AuditStore
from service.jobs.launchers.base import Launcher, RunnerState
from service.jobs.state import IllegalTransition, Status
from service.jobs.store import JobStore
from service.jobs.tables import JobRow, as_utc, utcnow
from service.jobs.webhook import claim_timeout_s, send_job_webhook

log = logging.getLogger(__name__)

MAX_LAUNCHES_PER_TICK = 50
WEBHOOK_SENDERS = 2  # deliveries at once per process


class Supervisor:
    def __init__(self, store: JobStore, launcher: Launcher, settings: TrainingSettings) -> None:
        self.store, self.launcher, self.settings = store, launcher, settings
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._sending: set[str] = set()
        self._lock = threading.Lock()
        self.audit = AuditTrail(AuditStore(store.engine).add)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="job-supervisor", daemon=True)
        self._thread.start()

    def halt(self) -> None:
        """Launch nothing from now on, without waiting for the loop (`stop` joins it): the
        process is quitting, and a job another process's runner just paused must wait for the
        next start, not get a runner this process would stop again during its start-up."""
        self._stopping.set()
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self.halt()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def wake(self) -> None:
        """Run a tick now (a job was submitted or cancelled)."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("supervisor tick failed; trying again next interval")
            self._wake.wait(self.settings.supervisor_interval_s)
            self._wake.clear()

    def tick(self) -> None:
        running = self.reap()
        self.launcher.housekeeping(running)
        self.launch_queued()
        self.send_webhooks()

    # running jobs
    def reap(self) -> set[str]:
        """Handle dead runners; returns the ids of the jobs that were running."""
        running = self.store.with_status(Status.RUNNING)
        for job in running:
            # A job started under another launcher (settings changed): only heartbeats count.
            if job.launcher == self.launcher.name:
                state = self.launcher.status(job)
            else:
                state = RunnerState("unknown")
            verdict = self._verdict(job, state)
            if verdict is not None:
                self._handle_dead(job, state, verdict)
        return {job.id for job in running}

    def _verdict(self, job: JobRow, state: RunnerState) -> str | None:
        """Why the job's runner counts as dead, or None while it may still be alive."""
        if state.state == "failed":
            return state.detail or f"runner failed: {state.reason}"
        if state.state == "exited":
            return state.detail or "runner process is gone"
        if state.state == "pending":
            return None
        beat = as_utc(job.heartbeat_at) or as_utc(job.started_at)
        # The runner sets a phase first thing; until then it is still starting up.
        started = job.phase is not None
        limit = (
            self.settings.heartbeat_timeout_s if started else self.settings.runner_start_timeout_s
        )
        if beat is not None and utcnow() - beat > timedelta(seconds=limit):
            return (
                f"no heartbeat for over {limit:g}s"
                if started
                else f"runner did not start in {limit:g}s"
            )
        return None

    def _handle_dead(self, job: JobRow, state: RunnerState, why: str) -> None:
        # `job` was read before its runner was looked at: a cancel (or the runner finishing)
        # in between stops that runner itself, and the verdict is about its end. A plain read
        # waits on no lock, even a hung runner's.
        now = self.store.get(job.id)
        if now.status != Status.RUNNING or now.attempts != job.attempts:
            return
        # Attempts that ended in a pause (the service stopping) are not failures.
        retry = state.retryable and now.attempts - now.pauses <= self.settings.max_retries
        # Stop the runner first: one that hung inside a write to its job's row (a heartbeat)
        # holds that row (SQLite's write lock, PostgreSQL's row lock) until it dies, and the
        # transition below would wait on it for good. Stopped, it can write nothing more; and
        # it is gone before this tick can launch the next attempt into the same work dir.
        self.launcher.cancel(job)
        try:
            if retry:
                self.store.transition(
                    job.id,
                    Status.QUEUED,
                    expected=[Status.RUNNING],
                    attempt=job.attempts,
                    runner_ref=None,
                    phase=None,
                )
            else:
                self.store.transition(
                    job.id,
                    Status.FAILED,
                    expected=[Status.RUNNING],
                    attempt=job.attempts,
                    error_reason=state.reason or "runner_lost",
                    error_detail=_detail(why, job.attempts),
                )
        except IllegalTransition:
            return  # the runner finished, or another supervisor acted first
        action = "re-queued to resume" if retry else "failed"
        if not retry:
            self._audit_failed(job, state.reason or "runner_lost")
        log.warning("job %s attempt %d: %s; %s", job.id, job.attempts, why, action)
        self.note(job, f"attempt {job.attempts}: {why}; {action}")

    def _audit_failed(self, job: JobRow, reason: str) -> None:
        target = f"job/{job.id}"
        self.audit.record(
            AuditRecord("job_finished", job.client, target, "failed", detail={"reason": reason})
        )

    def note(self, job: JobRow, line: str) -> None:
        """A line in the job's log (what `GET .../logs` shows), marked as the service's."""
        from service.jobs.launchers.local import LOG_FILE, job_dir

        path = job_dir(self.settings, job.id) / LOG_FILE
        if path.parent.is_dir():
            with path.open("a") as fh:
                fh.write(f"=== supervisor: {line}\n")

    # queued jobs
    def launch_queued(self) -> None:
        if self._stopping.is_set():
            return
        limits = self.launcher.limits_slots
        claimed = self.store.claim_queued(
            self.settings.max_concurrent_jobs if limits else MAX_LAUNCHES_PER_TICK,
            launcher=self.launcher.name,
            max_running=self.settings.max_concurrent_jobs if limits else None,
            per_client=self.settings.max_jobs_per_client,  # every launcher, GPUs too
        )
        for job in claimed:
            try:
                ref = self.launcher.launch(job)
            except Exception as exc:
                log.exception("could not launch job %s", job.id)
                self._fail_launch(job, exc)
                continue
            if not self.store.update_running(job.id, job.attempts, runner_ref=ref):
                self.launcher.cancel(job)  # cancelled between claim and launch
            log.info("job %s attempt %d launched (%s)", job.id, job.attempts, ref)

    def _fail_launch(self, job: JobRow, exc: Exception) -> None:
        first_line = (str(exc).splitlines() or [""])[0]
        with contextlib.suppress(IllegalTransition):
            self.store.transition(
                job.id,
                Status.FAILED,
                expected=[Status.RUNNING],
                attempt=job.attempts,
                error_reason="launch_failed",
                error_detail=f"{type(exc).__name__}: {first_line}"[:400],
            )
            self._audit_failed(job, "launch_failed")

    # webhooks
    def send_webhooks(self) -> None:
        for job in self.store.pending_webhooks(stale_after_s=claim_timeout_s(self.settings)):
            with self._lock:
                if job.id in self._sending or len(self._sending) >= WEBHOOK_SENDERS:
                    continue
                self._sending.add(job.id)
            # Daemon threads: a delivery retrying an unreachable host must not hold the
            # process when it stops; its claim goes stale and another sender takes it over.
            threading.Thread(target=self._send, args=(job.id,), name="webhook", daemon=True).start()

    def _send(self, job_id: str) -> None:
        try:
            send_job_webhook(self.store, job_id, self.settings)
        finally:
            with self._lock:
                self._sending.discard(job_id)


def _detail(why: str, attempts: int) -> str:
    return f"{why} (attempt {attempts}); no retries left"
