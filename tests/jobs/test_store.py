"""The job store and state machine on SQLite and the real PostgreSQL."""

from __future__ import annotations

import fcntl
import hashlib
import json
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from models.spec import JobSpec
from service.errors import Conflict, InvalidRequest
from service.jobs.database import current_revision, make_engine, migrate
from service.jobs.state import IllegalTransition, Phase, Status, check_transition
from service.jobs.store import JobNotFound, JobStore
from service.jobs.tables import JobRow


def head_revision() -> str:
    """The newest migration (the chain grows as features add tables)."""
    from alembic.script import ScriptDirectory

    from service.jobs.database import MIGRATIONS

    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert head is not None
    return head


def test_migrations_are_idempotent(db_url: str) -> None:
    engine = make_engine(db_url)
    migrate(engine)
    migrate(engine)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_migrating_logs_the_revisions_not_alembics_plugin_setup(tmp_path: Path) -> None:
    """A fresh process (alembic logs its plugins once, on import) migrating at INFO, as the
    training service's workers do."""
    script = (
        "import logging, sys\n"
        "logging.basicConfig(level='INFO')\n"
        "from service.jobs.database import make_engine, migrate\n"
        "migrate(make_engine('sqlite:///' + sys.argv[1]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "fresh.db")],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert "Running upgrade  -> 0001" in done.stderr
    assert "setup plugin" not in done.stderr


def test_sqlite_migrations_connect_only_while_holding_the_file_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first connection to a new SQLite file switches it to WAL, which SQLite refuses at
    once while another process is connecting: no connection may precede the lock."""
    database = tmp_path / "fresh.db"
    engine = make_engine(f"sqlite:///{database}")
    held: list[bool] = []
    connect = engine.connect

    def checked_connect() -> Any:
        with open(f"{database}.migrate.lock", "a") as other:  # another open file: flock conflicts
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held.append(True)
            else:
                held.append(False)
                fcntl.flock(other, fcntl.LOCK_UN)
        return connect()

    monkeypatch.setattr(engine, "connect", checked_connect)
    migrate(engine)
    assert held == [True]
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_two_processes_migrating_at_once_both_succeed(db_url: str) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            engine = make_engine(db_url)
            migrate(engine)
            engine.dispose()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    store = JobStore.open(db_url)
    assert store.counts()["queued"] == 0
    store.close()


def test_create_and_get(store: JobStore, make_spec: Callable[..., JobSpec]) -> None:
    row, created = store.create(make_spec(), actor="ci")
    assert created
    got = store.get(row.id)
    assert (got.status, got.attempts, got.created_by) == ("queued", 0, "ci")
    assert got.spec["model_name"] == "chest-xray"
    with pytest.raises(JobNotFound):
        store.get("no-such-job")


def test_idempotency_key(store: JobStore, make_spec: Callable[..., JobSpec]) -> None:
    first, created = store.create(make_spec(), idempotency_key="k1")
    again, created_again = store.create(make_spec(), idempotency_key="k1")
    assert created and not created_again
    assert again.id == first.id
    with pytest.raises(Conflict, match="different request body"):
        store.create(make_spec(epochs=2), idempotency_key="k1")
    other, _ = store.create(make_spec(), idempotency_key="k2")
    assert other.id != first.id
    assert store.counts()["queued"] == 2


def test_idempotent_retry_across_an_upgrade(
    store: JobStore, make_spec: Callable[..., JobSpec]
) -> None:
    """A job submitted before `notes` was a JobSpec field is stored without it; the same
    request retried after the upgrade is that job, and another body is still a 409."""
    first, _ = store.create(make_spec(), idempotency_key="before-upgrade")
    older = {k: v for k, v in first.spec.items() if k != "notes"}
    with store.engine.begin() as conn:
        conn.execute(
            update(JobRow).where(JobRow.id == first.id)
            .values(spec=older, spec_hash=hashlib.sha256(canonical(older)).hexdigest())
        )  # fmt: skip
    again, created = store.create(make_spec(), idempotency_key="before-upgrade")
    assert (again.id, created) == (first.id, False)
    with pytest.raises(Conflict, match="different request body"):
        store.create(make_spec(epochs=2), idempotency_key="before-upgrade")


def canonical(spec: dict[str, Any]) -> bytes:
    return json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()


def test_cursor_pagination_newest_first(store: JobStore, make_spec: Callable[..., JobSpec]) -> None:
    ids = [store.create(make_spec(seed=i))[0].id for i in range(7)]
    store.create(make_spec(model_name="other"))
    pages, cursor = [], None
    while True:
        rows, cursor = store.page(model_name="chest-xray", cursor=cursor, limit=3)
        pages.append([r.id for r in rows])
        if cursor is None:
            break
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [i for p in pages for i in p] == list(reversed(ids))
    rows, _ = store.page(status="running")
    assert rows == []
    with pytest.raises(InvalidRequest):
        store.page(cursor="not-a-cursor")
    with pytest.raises(InvalidRequest):
        store.page(limit=0)
    with pytest.raises(InvalidRequest, match="status must be one of"):
        store.page(status="done")


def test_state_machine_table() -> None:
    check_transition(Status.QUEUED, Status.RUNNING)
    check_transition(Status.RUNNING, Status.QUEUED)
    for target in Status:
        with pytest.raises(IllegalTransition):
            check_transition(Status.SUCCEEDED, target)
    with pytest.raises(IllegalTransition):
        check_transition(Status.QUEUED, Status.SUCCEEDED)
    assert IllegalTransition("x").status == 409


def test_claim_run_and_finish(store: JobStore, make_spec: Callable[..., JobSpec]) -> None:
    row, _ = store.create(make_spec())
    [claimed] = store.claim_queued(5, launcher="local")
    assert (claimed.id, claimed.status, claimed.attempts) == (row.id, "running", 1)
    assert store.claim_queued(5, launcher="local") == []
    assert store.update_running(row.id, 1, phase=Phase.TRAINING.value, progress=0.5)
    assert not store.update_running(row.id, 2, progress=0.6)  # a stale attempt is fenced off
    done = store.transition(row.id, Status.SUCCEEDED, expected=[Status.RUNNING], attempt=1)
    assert done.status == "succeeded" and done.finished_at is not None
    assert done.progress == 0.5
    with pytest.raises(IllegalTransition):
        store.transition(row.id, Status.FAILED, expected=[Status.RUNNING], attempt=1)
    with pytest.raises(IllegalTransition):
        store.cancel(row.id)


def test_requeue_fences_the_old_attempt(store: JobStore, make_spec: Callable[..., JobSpec]) -> None:
    row, _ = store.create(make_spec())
    store.claim_queued(1, launcher="local")
    store.transition(row.id, Status.QUEUED, expected=[Status.RUNNING], attempt=1)
    [again] = store.claim_queued(1, launcher="local")
    assert again.attempts == 2
    assert not store.heartbeat(row.id, 1)
    assert store.heartbeat(row.id, 2)
    with pytest.raises(IllegalTransition):
        store.transition(row.id, Status.FAILED, expected=[Status.RUNNING], attempt=1)


def test_only_one_of_two_racing_transitions_wins(
    store: JobStore, make_spec: Callable[..., JobSpec]
) -> None:
    row, _ = store.create(make_spec())
    store.claim_queued(1, launcher="local")
    results: list[str] = []
    barrier = threading.Barrier(2)

    def act(target: Status) -> None:
        barrier.wait()
        try:
            store.transition(row.id, target, expected=[Status.RUNNING], attempt=1)
            results.append(target.value)
        except IllegalTransition:
            results.append("lost")

    threads = [threading.Thread(target=act, args=(s,)) for s in (Status.FAILED, Status.QUEUED)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results).count("lost") == 1
    assert store.get(row.id).status in results


def test_cancel_queued_and_not_while_publishing(
    store: JobStore, make_spec: Callable[..., JobSpec]
) -> None:
    queued, _ = store.create(make_spec())
    assert store.cancel(queued.id).status == "cancelled"
    running, _ = store.create(make_spec(seed=1))
    store.claim_queued(1, launcher="local")
    assert store.allocate_version(running.id, 1) == 1
    assert store.get(running.id).phase == "publishing"
    with pytest.raises(IllegalTransition, match="publishing"):
        store.cancel(running.id)


def test_versions_are_allocated_once_per_job_without_gaps(
    store: JobStore, make_spec: Callable[..., JobSpec]
) -> None:
    jobs = [store.create(make_spec(seed=i))[0] for i in range(3)]
    store.claim_queued(3, launcher="local")
    assert [store.allocate_version(j.id, 1) for j in jobs] == [1, 2, 3]
    assert store.allocate_version(jobs[0].id, 1) == 1  # the same job keeps its number
    assert store.release_version(jobs[2].id)  # the newest can be given back...
    assert not store.release_version(jobs[0].id)  # ...an older one would leave a gap
    assert store.versions("chest-xray") == [1, 2]


def test_cancelled_job_takes_no_version(store: JobStore, make_spec: Callable[..., JobSpec]) -> None:
    row, _ = store.create(make_spec())
    store.claim_queued(1, launcher="local")
    store.cancel(row.id)
    with pytest.raises(IllegalTransition):
        store.allocate_version(row.id, 1)
    assert store.versions("chest-xray") == []


def test_concurrent_version_allocation(store: JobStore, make_spec: Callable[..., JobSpec]) -> None:
    jobs = [store.create(make_spec(seed=i))[0] for i in range(6)]
    store.claim_queued(6, launcher="local")
    barrier = threading.Barrier(len(jobs))
    got: dict[str, int] = {}

    def allocate(job_id: str) -> None:
        barrier.wait()
        got[job_id] = store.allocate_version(job_id, 1)

    threads = [threading.Thread(target=allocate, args=(j.id,)) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got.values()) == [1, 2, 3, 4, 5, 6]
    assert store.versions("chest-xray") == [1, 2, 3, 4, 5, 6]


def test_counts_include_every_status(store: JobStore, make_spec: Callable[..., JobSpec]) -> None:
    store.create(make_spec())
    counts = store.counts()
    assert set(counts) == {s.value for s in Status}
    assert counts["queued"] == 1 and counts["running"] == 0


def _allocate_in_process(url: str, job_id: str, start: float) -> int:
    import time as _time

    store = JobStore(make_engine(url))
    _time.sleep(max(0.0, start - _time.time()))
    try:
        return store.allocate_version(job_id, 1)
    finally:
        store.close()


def test_version_allocation_from_separate_processes(
    store: JobStore, db_url: str, make_spec: Callable[..., JobSpec]
) -> None:
    import multiprocessing
    import time as _time

    jobs = [store.create(make_spec(seed=i))[0] for i in range(2)]
    store.claim_queued(2, launcher="local")
    ctx = multiprocessing.get_context("spawn")
    start = _time.time() + 3.0  # both processes are ready and allocate at the same moment
    with ctx.Pool(2) as pool:
        results = pool.starmap(_allocate_in_process, [(db_url, j.id, start) for j in jobs])
    assert sorted(results) == [1, 2]
    assert store.versions("chest-xray") == [1, 2]


def test_upgrade_from_the_first_revision_keeps_rows(db_url: str) -> None:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    from service.jobs.database import MIGRATIONS

    engine = make_engine(db_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
        conn.execute(
            text(
                "INSERT INTO jobs (id, model_name, spec, spec_hash, status, progress, history,"
                " attempts, created_at, created_by) VALUES ('j1', 'm', '{}', 'h', 'queued', 0,"
                " '[]', 0, '2026-01-01 00:00:00+00:00', 'me')"
            )
        )
    migrate(engine)
    assert current_revision(engine) == head_revision()
    store = JobStore(engine)
    assert store.get("j1").webhook_claimed_at is None
    assert store.get("j1").client == "me"  # an old job belongs to the key that made it
    store.close()


def test_abandoned_webhook_claim_is_taken_over(
    store: JobStore, make_spec: Callable[..., JobSpec]
) -> None:
    row, _ = store.create(make_spec(webhook={"url": "http://127.0.0.1:9/h"}))
    assert not store.claim_webhook(row.id)  # not terminal yet
    store.cancel(row.id)
    assert store.claim_webhook(row.id, stale_after_s=60)
    assert not store.claim_webhook(row.id, stale_after_s=60)  # the sender is alive
    assert store.pending_webhooks(stale_after_s=60) == []
    assert [j.id for j in store.pending_webhooks(stale_after_s=0)] == [row.id]
    assert store.claim_webhook(row.id, stale_after_s=0)  # ...or presumed dead


def test_concurrent_submits_with_one_key_make_one_job(
    store: JobStore, make_spec: Callable[..., JobSpec]
) -> None:
    barrier = threading.Barrier(4)
    ids: list[str] = []

    def submit() -> None:
        barrier.wait()
        ids.append(store.create(make_spec(), idempotency_key="retry-me")[0].id)

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 4 and len(set(ids)) == 1
    assert store.counts()["queued"] == 1
