"""The studies purges block (`service.dicom_node.purges`), as each process of the node sees
them. A purge blocks its study unless asked not to (`block: false`), until it is released:
the intake drops every instance of the study before writing a byte (acknowledged, so that an
auto-routing PACS does not send it again and again), retrievals and orders do not fetch it,
and the queue worker purges a series of it that came in before its process knew of the block.

The blocks are kept in memory, a study's salted hash to the newest purge blocking it, so that
each instance costs one HMAC of its study UID (one per audit salt while rotating) and a look-up,
never a query. They are read again from the database at most every `REFRESH_S` seconds (by
the first instance or worker round after), and changed at once in the process that makes or
releases a purge and in the worker as it applies one: a purge made through one process is
honoured by every other within `REFRESH_S`. The cache is the cheap first check only: the
write of a study's rows checks the database again, in its own transaction (`refuse`), so a
process that has yet to read a block writes nothing of the study all the same.

The instances dropped are counted per purge in memory and written with each refresh, one
UPDATE a purge an interval: a PACS routing a study of a thousand instances back would
otherwise make a thousand writes to one row, each holding a lock the others wait on. What a
process counted since its last write is lost if it is killed (the metric,
`scantune_dicom_instances_received_total{outcome="purged"}`, counts every one).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Engine, case, select, update
from sqlalchemy.orm import Session, sessionmaker

from service.audit import hash_uid
from service.dicom_node.tables import PurgeRow
from service.jobs.store import utcnow

REFRESH_S = 5.0  # the longest a purge made through another process goes unseen here
IN_FORCE = PurgeRow.blocked.is_(True) & PurgeRow.released_at.is_(None)


class Blocked(Exception):
    """A write refused: the study is blocked by purge `purge_id` (under `study_hash`)."""

    def __init__(self, study_hash: str, purge_id: int) -> None:
        super().__init__(f"the study is blocked by purge {purge_id}")
        self.study_hash, self.purge_id = study_hash, purge_id


class PurgeBlocks:
    def __init__(self, engine: Engine, salts: Sequence[str], refresh_s: float = REFRESH_S) -> None:
        """`salts`: the audit salt, then the one before it while rotating (a study purged
        under it stays blocked)."""
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self.salts, self.refresh_s = tuple(salts), refresh_s
        self._blocked: dict[str, int] = {}  # replaced whole, never changed: read without a lock
        self._due = float("-inf")  # when the blocks are read again (time.monotonic)
        self._reading = threading.Lock()  # one refresh at a time; `add`, `remove` wait for it
        self._counting = threading.Lock()
        self._dropped: dict[int, tuple[int, datetime]] = {}  # not yet written: count, last

    def blocking(self, study_uid: str) -> int | None:
        """The purge that blocks the study; None: none does."""
        self.refresh(due_only=True)
        blocked = self._blocked
        for salt in self.salts:
            found = blocked.get(hash_uid(study_uid, salt))
            if found is not None:
                return found
        return None

    def refuse(self, session: Session, study_uid: str) -> None:
        """Raise Blocked, rolling the write back, if a purge blocks the study as the database
        has it now, whatever the cache says. Called in the transaction that writes the
        study's rows, after writing them (flushed here): on SQLite the write lock is held, so
        no purge is committed between this check and the commit; on PostgreSQL one committed
        meanwhile is applied under the queue's lock, which the write holds: it finds them."""
        session.flush()
        hashes = {hash_uid(study_uid, salt) for salt in self.salts}
        found = session.execute(
            select(PurgeRow.study_hash, PurgeRow.id)
            .where(PurgeRow.study_hash.in_(hashes), IN_FORCE)
            .order_by(PurgeRow.id.desc())
            .limit(1)
        ).first()
        if found is not None:
            raise Blocked(found.study_hash, found.id)

    def add(self, study_hash: str, purge_id: int) -> None:
        """A purge that blocks, made (or applied) in this process: in force here at once."""
        with self._reading:  # a refresh under way, read before it was made, ends first
            newest = max(purge_id, self._blocked.get(study_hash, 0))
            self._blocked = {**self._blocked, study_hash: newest}

    def remove(self, study_hash: str) -> None:
        with self._reading:
            self._blocked = {h: p for h, p in self._blocked.items() if h != study_hash}

    def release(self, purge_id: int, reason: str, by: str) -> str | None:
        """End the block of the purge's study: every purge of it that blocks is released with
        it (a study purged twice is let in by one release); the study's hash. None: the purge
        blocks nothing (made with `block: false`, or released already)."""
        values = {"released_at": utcnow(), "released_by": by[:255], "released_reason": reason[:255]}
        with self._sessions.begin() as session:
            # The purge first, by itself: of two releases at once, one finds it in force.
            ended = session.execute(
                update(PurgeRow).where(PurgeRow.id == purge_id, IN_FORCE).values(**values)
            )
            if not ended.rowcount:  # type: ignore[attr-defined]
                return None
            study_hash = session.get_one(PurgeRow, purge_id).study_hash
            session.execute(
                update(PurgeRow).where(PurgeRow.study_hash == study_hash, IN_FORCE).values(**values)
            )
        self.remove(study_hash)
        return study_hash

    def refresh(self, *, due_only: bool = False) -> None:
        """Write the drops counted here, then read the blocks again; with `due_only`, only
        once `refresh_s` has passed, and not while another thread does it."""
        if due_only and time.monotonic() < self._due:
            return
        if not self._reading.acquire(blocking=not due_only):
            return
        try:
            self.flush()
            with self._sessions() as session:
                rows = session.execute(select(PurgeRow.study_hash, PurgeRow.id).where(IN_FORCE))
                found: dict[str, int] = {}
                for study_hash, purge_id in rows:
                    found[study_hash] = max(purge_id, found.get(study_hash, 0))
            self._blocked = found
            self._due = time.monotonic() + self.refresh_s
        finally:
            self._reading.release()

    # --- the instances dropped -----------------------------------------------------------------

    def dropped(self, purge_id: int) -> bool:
        """Count an instance the purge's block dropped; True for the first since the counts
        were last written (one log line an interval, not one an instance)."""
        now = utcnow()
        with self._counting:
            count, _ = self._dropped.get(purge_id, (0, now))
            self._dropped[purge_id] = (count + 1, now)
        return count == 0

    def pending(self, purge_id: int) -> tuple[int, datetime | None]:
        """The instances the purge dropped here not yet written, and when the last came."""
        with self._counting:
            return self._dropped.get(purge_id, (0, None))

    def flush(self) -> None:
        """Write the drops counted here (added to those of other processes); kept for the next
        try if the database is away."""
        with self._counting:
            counted, self._dropped = self._dropped, {}
        if not counted:
            return
        try:
            with self._sessions.begin() as session:
                for purge_id, (count, last) in counted.items():
                    later = PurgeRow.dropped_at.is_(None) | (PurgeRow.dropped_at < last)
                    session.execute(
                        update(PurgeRow).where(PurgeRow.id == purge_id).values(
                            dropped=PurgeRow.dropped + count,
                            dropped_at=case((later, last), else_=PurgeRow.dropped_at),
                        )
                    )  # fmt: skip
        except Exception:
            with self._counting:
                for purge_id, (count, last) in counted.items():
                    since, latest = self._dropped.get(purge_id, (0, last))
                    self._dropped[purge_id] = (count + since, max(last, latest))
            raise
