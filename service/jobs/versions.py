"""Model version numbers, taken by jobs in the job store: 1, 2, 3... per model, with no gaps
or duplicates (split from `service.jobs.store`, whose `JobStore` has these methods)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import sessionmaker

from service.errors import Conflict
from service.jobs.state import IllegalTransition, JobNotFound, Phase, Status
from service.jobs.tables import JobRow, ModelVersionRow

_ALLOCATION_TRIES = 50


class VersionNumbers:
    """The version-number methods of the job store (a mixin over its sessions)."""

    _sessions: sessionmaker[Any]

    def allocate_version(self, job_id: str, attempt: int) -> int:
        """The job's version number: the next free one for its model, taken once per job.

        The insert and the job's move to the publishing phase share one transaction, so a
        cancelled or superseded runner takes no number. A lost race on the unique
        (model_name, version) pair is retried with the next number.
        """
        for _ in range(_ALLOCATION_TRIES):
            try:
                return self._allocate_once(job_id, attempt)
            except IntegrityError:
                continue
            except OperationalError as exc:  # SQLite: a writer committed after our read
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                time.sleep(0.05)
        raise Conflict(f"could not allocate a version for job {job_id}; try again")

    def _allocate_once(self, job_id: str, attempt: int) -> int:
        with self._sessions.begin() as session:
            job = session.scalar(select(JobRow).where(JobRow.id == job_id))
            if job is None:
                raise JobNotFound(f"no training job with id '{job_id}'")
            taken = session.scalar(
                select(ModelVersionRow.version).where(ModelVersionRow.job_id == job_id)
            )
            if taken is None:
                latest = session.scalar(
                    select(func.max(ModelVersionRow.version)).where(
                        ModelVersionRow.model_name == job.model_name
                    )
                )
                taken = (latest or 0) + 1
                session.add(
                    ModelVersionRow(
                        model_name=job.model_name, version=taken, job_id=job_id, created_at=utcnow()
                    )
                )
                session.flush()
            moved = session.execute(
                update(JobRow)
                .where(
                    JobRow.id == job_id,
                    JobRow.status == Status.RUNNING.value,
                    JobRow.attempts == attempt,
                )
                .values(phase=Phase.PUBLISHING.value, version=taken, heartbeat_at=utcnow())
            )
            if not _rowcount(moved):
                session.rollback()
                raise IllegalTransition(f"job {job_id} is no longer running this attempt")
            return int(taken)

    def release_version(self, job_id: str) -> bool:
        """Give back a job's number after a failed publish, if no later number was taken."""
        with self._sessions.begin() as session:
            mine = session.scalar(select(ModelVersionRow).where(ModelVersionRow.job_id == job_id))
            if mine is None:
                return False
            later = session.scalar(
                select(func.count()).where(
                    ModelVersionRow.model_name == mine.model_name,
                    ModelVersionRow.version > mine.version,
                )
            )
            if later:
                return False
            session.delete(mine)
            session.execute(update(JobRow).where(JobRow.id == job_id).values(version=None))
            return True

    def versions(self, model_name: str) -> list[int]:
        query = (
            select(ModelVersionRow.version)
            .where(ModelVersionRow.model_name == model_name)
            .order_by(ModelVersionRow.version)
        )
        with self._sessions() as session:
            return list(session.scalars(query))


def utcnow() -> datetime:
    return datetime.now(UTC)


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)
