"""The job store: every read and write of job rows, as short transactions.

Every state change is a conditional UPDATE (`WHERE status = :expected`, and for a runner's
writes `AND attempts = :attempt`), so two API processes and any number of runners can share
one database: whoever loses a race sees zero rows updated and backs off. `attempts` doubles
as a fencing token: a runner the supervisor gave up on can no longer write to its job.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Engine, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from models.spec import JobSpec
from service.errors import Conflict, InvalidRequest
from service.jobs.database import make_engine, migrate
from service.jobs.state import (
    TERMINAL,
    ForeignJob,
    IllegalTransition,
    JobNotFound,
    Phase,
    Status,
    check_transition,
)
from service.jobs.tables import JobRow, as_utc, rowcount, utcnow
from service.jobs.versions import VersionNumbers
from service.paging import newest_first, split_page

__all__ = ["JobNotFound", "JobStore", "as_utc", "spec_hash", "utcnow"]

MAX_PAGE = 200
CLAIM_LOCK_ID = 0x5CA7_7E00_0002


def scoped_key(client: str, key: str) -> str:
    """An Idempotency-Key as stored: per client, so clients neither collide nor learn of
    each other's jobs."""
    return hashlib.sha256(f"{client}\x00{key}".encode()).hexdigest()


def spec_hash(spec: JobSpec) -> str:
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def same_request(row: JobRow, digest: str) -> bool:
    """Whether a stored job was asked with the spec hashed `digest`; a field added to `JobSpec`
    since (an upgrade between a submit and its retry) counts with its default, not as a 409."""
    if row.spec_hash == digest:
        return True
    try:
        return spec_hash(JobSpec.model_validate(row.spec)) == digest
    except ValidationError:  # stored under rules since tightened: not this request
        return False


class JobStore(VersionNumbers):
    """Job rows in SQLite or PostgreSQL; rows returned are detached snapshots."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str, *, run_migrations: bool = True) -> JobStore:
        engine = make_engine(url)
        if run_migrations:
            migrate(engine)
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def check(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    # creating and reading
    def create(
        self,
        spec: JobSpec,
        *,
        idempotency_key: str | None = None,
        actor: str = "anonymous",
        client: str | None = None,
    ) -> tuple[JobRow, bool]:
        """Insert a queued job; returns (row, created). A reused key returns the first job."""
        digest = spec_hash(spec)
        client = client or actor
        stored_key = scoped_key(client, idempotency_key) if idempotency_key else None
        row = JobRow(
            id=str(uuid.uuid4()),
            model_name=spec.model_name,
            spec=spec.model_dump(mode="json"),
            spec_hash=digest,
            idempotency_key=stored_key,
            status=Status.QUEUED.value,
            progress=0.0,
            epochs=spec.epochs,
            history=[],
            attempts=0,
            created_at=utcnow(),
            created_by=actor,
            client=client,
            webhook_state="pending" if spec.webhook else None,
        )
        try:
            with self._sessions.begin() as session:
                session.add(row)
            return row, True
        except IntegrityError:
            if idempotency_key is None:
                raise
        existing = self._by_key(idempotency_key, client)
        if not same_request(existing, digest):
            raise Conflict(
                f"Idempotency-Key {idempotency_key!r} was already used for job {existing.id} "
                "with a different request body"
            )
        return existing, False

    def find_by_key(self, key: str, client: str) -> JobRow | None:
        stored = scoped_key(client, key)
        with self._sessions() as session:
            return session.scalar(select(JobRow).where(JobRow.idempotency_key == stored))

    def _by_key(self, key: str, client: str) -> JobRow:
        row = self.find_by_key(key, client)
        if row is None:  # the conflicting insert was rolled back: let the caller retry
            raise Conflict(f"Idempotency-Key {key!r} is being used by a concurrent request")
        return row

    def get(self, job_id: str, *, client: str | None = None) -> JobRow:
        """The job; with `client`, only if that client owns it (another's is not found)."""
        with self._sessions() as session:
            row = session.scalar(select(JobRow).where(JobRow.id == job_id))
        if row is None:
            raise JobNotFound(f"no training job with id '{job_id}'")
        if client is not None and row.client != client:
            raise ForeignJob(f"no training job with id '{job_id}'")
        return row

    def page(
        self,
        *,
        status: str | None = None,
        model_name: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
        client: str | None = None,
    ) -> tuple[list[JobRow], str | None]:
        """Newest first; the cursor names the last row of the previous page."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest(
                f"limit must be between 1 and {MAX_PAGE}",
                errors=[{"loc": "query/limit", "msg": "out of range", "type": "value_error"}],
            )
        query = newest_first(select(JobRow), JobRow.seq, "seq", cursor, limit)
        if status is not None:
            query = query.where(JobRow.status == _status_filter(status).value)
        if model_name is not None:
            query = query.where(JobRow.model_name == model_name)
        if client is not None:
            query = query.where(JobRow.client == client)
        with self._sessions() as session:
            rows = list(session.scalars(query))
        return split_page(rows, limit, "seq", lambda row: row.seq)

    def counts(self) -> dict[str, int]:
        query = select(JobRow.status, func.count()).group_by(JobRow.status)
        with self._sessions() as session:
            found = {status: int(n) for status, n in session.execute(query)}
        return {s.value: found.get(s.value, 0) for s in Status}

    def with_status(self, *statuses: Status) -> list[JobRow]:
        query = select(JobRow).where(JobRow.status.in_([s.value for s in statuses]))
        with self._sessions() as session:
            return list(session.scalars(query.order_by(JobRow.seq)))

    # state changes
    def transition(
        self,
        job_id: str,
        target: Status,
        *,
        expected: Iterable[Status] | None = None,
        attempt: int | None = None,
        **values: Any,
    ) -> JobRow:
        """Move a job to `target` if it is still in an allowed state (and attempt, if given)."""
        current = self.get(job_id)
        allowed = set(expected) if expected is not None else {Status(current.status)}
        if Status(current.status) not in allowed:
            raise IllegalTransition(f"job {job_id} is {current.status}, not {_names(allowed)}")
        for state in allowed:
            check_transition(state, target)
        if target in TERMINAL:
            values.setdefault("finished_at", utcnow())
        where = [JobRow.id == job_id, JobRow.status.in_([s.value for s in allowed])]
        if attempt is not None:
            where.append(JobRow.attempts == attempt)
        if self._update(where, status=target.value, **values) == 0:
            now = self.get(job_id)
            raise IllegalTransition(
                f"job {job_id} changed to {now.status} (attempt {now.attempts}) meanwhile"
            )
        return self.get(job_id)

    def pause(self, job_id: str, attempt: int) -> JobRow:
        """running -> queued by the job's own runner as its service stops: the next start
        resumes it from its checkpoint, and this attempt counts as a pause, not as one of the
        failures `max_retries` allows (a restart of the service is no fault of the job)."""
        return self.transition(
            job_id,
            Status.QUEUED,
            expected=[Status.RUNNING],
            attempt=attempt,
            runner_ref=None,
            phase=None,
            pauses=JobRow.pauses + 1,
        )

    def cancel(self, job_id: str, **values: Any) -> JobRow:
        """queued/running -> cancelled (with `values`), refused once publishing has begun."""
        job = self.get(job_id)
        if Status(job.status) in TERMINAL:
            raise IllegalTransition(f"job {job_id} already {job.status}; it cannot be cancelled")
        where = [
            JobRow.id == job_id,
            JobRow.status.in_([Status.QUEUED.value, Status.RUNNING.value]),
            (JobRow.phase.is_(None)) | (JobRow.phase != Phase.PUBLISHING.value),
        ]
        changed = self._update(where, status=Status.CANCELLED.value, finished_at=utcnow(), **values)
        if changed == 0:
            now = self.get(job_id)
            raise IllegalTransition(
                f"job {job_id} is {now.status}"
                + (" and already publishing" if now.phase == Phase.PUBLISHING else "")
                + "; it cannot be cancelled"
            )
        return self.get(job_id)

    def claim_queued(
        self,
        limit: int,
        *,
        launcher: str,
        max_running: int | None = None,
        per_client: int | None = None,
    ) -> list[JobRow]:
        """Take up to `limit` queued jobs (oldest first) and mark them running, attempt + 1.

        With `max_running`, claims only while fewer jobs than that are running; with
        `per_client`, skips the jobs of a client that has that many running. Claimers are
        serialised (an advisory lock on PostgreSQL, the write lock on SQLite) so two API
        processes cannot both fill the last slot.
        """
        if limit <= 0:
            return []
        # Look before locking: on SQLite the claim lock is the database's write lock, and a
        # runner frozen inside a write (SIGSTOP, a hung NFS) holds that until the supervisor
        # reaps it; a supervisor waiting here every tick with nothing to claim could not.
        with self._sessions() as session:
            queued = session.scalar(
                select(JobRow.id).where(JobRow.status == Status.QUEUED.value).limit(1)
            )
        if queued is None:
            return []
        claimed: list[str] = []
        with self._sessions.begin() as session:
            self._lock_claims(session)
            if max_running is not None:
                running = session.scalar(
                    select(func.count()).where(JobRow.status == Status.RUNNING.value)
                )
                limit = min(limit, max_running - int(running or 0))
                if limit <= 0:
                    return []
            now = utcnow()
            for job_id in self._claimable(session, limit, per_client):
                result = session.execute(
                    update(JobRow)
                    .where(JobRow.id == job_id, JobRow.status == Status.QUEUED.value)
                    .values(
                        status=Status.RUNNING.value,
                        attempts=JobRow.attempts + 1,
                        started_at=func.coalesce(JobRow.started_at, now),
                        heartbeat_at=now,
                        launcher=launcher,
                        runner_ref=None,
                        phase=None,
                    )
                )
                if rowcount(result):
                    claimed.append(job_id)
        return [self.get(job_id) for job_id in claimed]

    def _claimable(self, session: Session, limit: int, per_client: int | None) -> list[str]:
        """Queued job ids to start, oldest first, leaving out clients at their cap."""
        query = (
            select(JobRow.id, JobRow.client)
            .where(JobRow.status == Status.QUEUED.value)
            .order_by(JobRow.seq)
            .limit(limit if per_client is None else MAX_PAGE)
        )
        if self.is_postgres:
            query = query.with_for_update(skip_locked=True)
        running: dict[str, int] = {}
        if per_client is not None:
            counts = select(JobRow.client, func.count()).where(
                JobRow.status == Status.RUNNING.value
            )
            grouped = session.execute(counts.group_by(JobRow.client))
            running = {client: int(count) for client, count in grouped}
        picked: list[str] = []
        for job_id, client in session.execute(query):
            if len(picked) == limit:
                break
            if per_client is None or running.get(client, 0) < per_client:
                picked.append(job_id)
                running[client] = running.get(client, 0) + 1
        return picked

    def _lock_claims(self, session: Session) -> None:
        if self.is_postgres:
            session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": CLAIM_LOCK_ID})
        else:  # a write that matches nothing still takes SQLite's write lock for the transaction
            session.execute(update(JobRow).where(JobRow.seq < 0).values(seq=JobRow.seq))

    def update_running(self, job_id: str, attempt: int, **values: Any) -> bool:
        """A runner's write to its own job; False when it no longer owns the job."""
        where = [
            JobRow.id == job_id,
            JobRow.status == Status.RUNNING.value,
            JobRow.attempts == attempt,
        ]
        return self._update(where, **values) == 1

    def heartbeat(self, job_id: str, attempt: int) -> bool:
        return self.update_running(job_id, attempt, heartbeat_at=utcnow())

    def set_fields(self, job_id: str, **values: Any) -> None:
        """Unconditional write of bookkeeping fields (promotion, webhook outcome)."""
        self._update([JobRow.id == job_id], **values)

    def claim_webhook(self, job_id: str, *, stale_after_s: float = 600.0) -> bool:
        """pending → sending for one sender only; False when someone else holds it.

        A claim older than `stale_after_s` belongs to a sender that died mid-delivery and
        can be taken over.
        """
        where = [JobRow.id == job_id, self._deliverable(stale_after_s)]
        now = utcnow()
        return self._update(where, webhook_state="sending", webhook_claimed_at=now) == 1

    def pending_webhooks(self, *, stale_after_s: float = 600.0) -> list[JobRow]:
        query = select(JobRow).where(self._deliverable(stale_after_s))
        with self._sessions() as session:
            return list(session.scalars(query))

    @staticmethod
    def _deliverable(stale_after_s: float) -> Any:
        abandoned = utcnow() - timedelta(seconds=stale_after_s)
        return JobRow.status.in_([s.value for s in TERMINAL]) & (
            (JobRow.webhook_state == "pending")
            | ((JobRow.webhook_state == "sending") & (JobRow.webhook_claimed_at < abandoned))
        )

    def _update(self, where: list[Any], **values: Any) -> int:
        with self._sessions.begin() as session:
            return rowcount(session.execute(update(JobRow).where(*where).values(**values)))


def _status_filter(value: str) -> Status:
    try:
        return Status(value)
    except ValueError:
        names = ", ".join(s.value for s in Status)
        raise InvalidRequest(
            f"status must be one of {names}",
            errors=[{"loc": "query/status", "msg": f"not one of {names}", "type": "enum"}],
        ) from None


def _names(states: Iterable[Status]) -> str:
    return " or ".join(sorted(s.value for s in states))
