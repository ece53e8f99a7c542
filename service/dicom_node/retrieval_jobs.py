"""Retrievals in the background: `POST /v1/retrievals` with `wait: false` answers 202 at once
with a retrieval id, and `GET /v1/retrievals/{id}` says what became of it (`GET /v1/retrievals`
lists them, newest first). A large study takes
minutes to come over C-MOVE: longer than an ingress or a client waits, and all that time it
would hold one of the node's HTTP threads, which STOW-RS senders need.

Each is a row of `dicom_retrievals` (in the job store's database), then a task on a small
pool of threads in the node's one worker process: the same C-FIND and C-MOVE as a retrieval
that waits (`Retriever.retrieve`), its outcome written back (done, not_found, failed, with the
same texts). A retrieval the node was running when it stopped is failed at the next start
("ask again"): its C-MOVE went with the process, and what arrived of it is classified anyway.

`cancel` stops one: a retrieval still waiting for a thread never starts (`cancelled` at once);
a running one is `cancelling` until its C-MOVE answers the C-CANCEL (sent at once), then
`cancelled`, with the counts of what came (classified like the rest). A source that gives no
final answer within `SCANTUNE_DICOM_RETRIEVE_CANCEL_GRACE_S` is cut off (A-ABORT): `cancelled`
all the same, its `error` saying so, the counts what reached the node (`moves.Arrivals`). One
that ended first keeps its outcome.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from service.dicom_node.ledger import iso_time
from service.dicom_node.peers import DicomSource
from service.dicom_node.retrieve import Asked, NotHeld, RetrieveFailed, Retriever
from service.dicom_node.tables import RetrievalRow
from service.jobs.store import utcnow
from service.paging import newest_page

log = logging.getLogger("scantune.dicom")
RUNNING_AT_ONCE = 2  # each holds an association with a PACS: a key may not flood it
ENDED = frozenset({"done", "not_found", "failed", "cancelled"})
# Called as each ends: (client, source, outcome, studies, completed, failed), to count and audit.
Done = Callable[[str, str, str, list[str], int, int], None]


class RetrievalJobs:
    def __init__(self, engine: Engine, retriever: Retriever, on_done: Done) -> None:
        self.engine, self.retriever, self.on_done = engine, retriever, on_done
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._pool = ThreadPoolExecutor(RUNNING_AT_ONCE, thread_name_prefix="dicom-retrieval")
        # This process's retrievals not yet ended: each one's stop signal, and those started.
        self._lock = threading.Lock()
        self._cancels: dict[int, threading.Event] = {}
        self._started: set[int] = set()

    def submit(self, source: DicomSource, asked: Asked, client: str) -> dict[str, Any]:
        """Keep the retrieval (`running`) and start it; its view."""
        with self._sessions.begin() as session:
            row = RetrievalRow(
                source=source.name,
                study_uid=asked.study_uid,
                series_uid=asked.series_uid,
                accession=asked.accession,
                client=client[:255],
                state="running",
                created_at=utcnow(),
            )
            session.add(row)
            session.flush()
            view = _view(row)
        with self._lock:
            self._cancels[int(view["id"])] = threading.Event()
        self._pool.submit(self._run, int(view["id"]), source, asked, client)
        return view

    def cancel(self, retrieval_id: int, client: str | None) -> tuple[dict[str, Any], bool] | None:
        """Ask a retrieval to stop: its view after, and whether it was still going (one that
        had ended is left as it is). None: no such retrieval of `client`'s."""
        found = self.get(retrieval_id, client)
        if found is None or found["state"] in ENDED:
            return None if found is None else (found, False)
        with self._lock:  # against `_run` starting it meanwhile
            signal = self._cancels.get(retrieval_id)
            started = retrieval_id in self._started
            if signal is not None and not started:
                signal.set()  # `_run` sees it first and never starts it
        state = "cancelling" if started else "cancelled"
        values: dict[str, Any] = {"state": state}
        if not started:  # never will: `_run` sees the signal first and leaves the row alone
            values.update(error=None, finished_at=utcnow())
        with self._sessions.begin() as session:
            changed = session.execute(
                update(RetrievalRow)
                .where(RetrievalRow.id == retrieval_id, RetrievalRow.state == "running")
                .values(**values)
            )
        if not changed.rowcount:  # type: ignore[attr-defined]
            return self.get(retrieval_id, client) or found, False  # it ended meanwhile
        if started and signal is not None:  # only now: the run that ends on it finds the
            signal.set()  # row cancelling, and this call says it stopped it
        if not started:
            self.on_done(found["client"], found["source"], "cancelled", [], 0, 0)
        return self.get(retrieval_id, client) or found, True

    def get(self, retrieval_id: int, client: str | None) -> dict[str, Any] | None:
        """The retrieval's view; with `client`, only that client's (None: any)."""
        with Session(self.engine) as session:
            row = session.get(RetrievalRow, retrieval_id)
            if row is None or (client is not None and row.client != client):
                return None
            return _view(row)

    def page(
        self, client: str | None, state: str | None, cursor: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Retrievals newest first: `client`'s own (None: every client's), in `state` if given."""
        query = select(RetrievalRow)
        if client is not None:
            query = query.where(RetrievalRow.client == client)
        if state is not None:
            query = query.where(RetrievalRow.state == state)
        with Session(self.engine) as session:
            rows, next_cursor = newest_page(
                session, query, RetrievalRow.id, "retrievals", cursor, limit
            )
            return [_view(row) for row in rows], next_cursor

    def recover(self) -> int:
        """At start: what was running when the node stopped cannot finish now; what was being
        cancelled has stopped."""
        ended = {
            "running": ("failed", "the node stopped during the retrieval; ask again"),
            "cancelling": ("cancelled", None),
        }
        count = 0
        with self._sessions.begin() as session:
            for was, (state, error) in ended.items():
                result = session.execute(
                    update(RetrievalRow)
                    .where(RetrievalRow.state == was)
                    .values(state=state, error=error, finished_at=utcnow())
                )
                count += int(result.rowcount or 0)  # type: ignore[attr-defined]
        return count

    def stop(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self, retrieval_id: int, source: DicomSource, asked: Asked, client: str) -> None:
        with self._lock:
            signal = self._cancels[retrieval_id]
            if signal.is_set():  # cancelled while it waited for a thread: `cancel` wrote it
                del self._cancels[retrieval_id]
                return
            self._started.add(retrieval_id)
        try:
            self._retrieve(retrieval_id, source, asked, client, signal)
        finally:
            with self._lock:
                self._cancels.pop(retrieval_id, None)
                self._started.discard(retrieval_id)

    def _retrieve(
        self,
        retrieval_id: int,
        source: DicomSource,
        asked: Asked,
        client: str,
        signal: threading.Event,
    ) -> None:
        studies: list[str] = []
        counts = (0, 0, 0)
        try:
            found = self.retriever.retrieve(source, asked, signal)
            studies, counts = found.studies, (found.completed, found.failed, found.warning)
            problem = found.problem(source.name)
        except NotHeld as exc:
            problem = ("not_found", str(exc))
        except RetrieveFailed as exc:
            problem = ("failed", str(exc))
        except Exception as exc:  # a bug must not leave it running forever
            log.exception("retrieval %d failed", retrieval_id)
            problem = ("failed", f"the retrieval failed ({type(exc).__name__})")
        outcome = problem[0] if problem else "ok"
        with self._sessions.begin() as session:
            row = session.get_one(RetrievalRow, retrieval_id)
            row.state = "done" if problem is None else problem[0]
            row.error = (problem[1][:255] or None) if problem else None
            row.studies = json.dumps(studies)
            row.completed, row.failed, row.warning = counts
            row.finished_at = utcnow()
        log.info("retrieval %d from %s: %s", retrieval_id, source.name, outcome)
        self.on_done(client, source.name, outcome, studies, counts[0], counts[1])


def _view(row: RetrievalRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "client": row.client,
        "source": row.source,
        "study_instance_uid": row.study_uid,
        "series_instance_uid": row.series_uid,
        "accession_number": row.accession,
        "state": row.state,
        "error": row.error,
        "study_instance_uids": json.loads(row.studies) if row.studies else [],
        "completed": row.completed or 0,
        "failed": row.failed or 0,
        "warning": row.warning or 0,
        "created_at": iso_time(row.created_at),
        "finished_at": iso_time(row.finished_at),
    }
