"""The supervisor's decisions with a scripted launcher: launch slots, reaping, retries."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from types import SimpleNamespace

import pytest
from flask import Flask
from sqlalchemy import Connection, text

from models.spec import JobSpec
from service.config import TrainingSettings
from service.jobs.database import make_engine
from service.jobs.launchers.base import Launcher, RunnerState
from service.jobs.state import Status
from service.jobs.store import JobStore, utcnow
from service.jobs.supervisor import Supervisor
from service.jobs.tables import JobRow


class ScriptedLauncher(Launcher):
    name = "local"

    def __init__(self) -> None:
        self.launched: list[tuple[str, int]] = []
        self.cancelled: list[str] = []
        self.states: dict[str, RunnerState] = {}

    def launch(self, job: JobRow) -> str:
        self.launched.append((job.id, job.attempts))
        return f"ref-{job.id}-{job.attempts}"

    def status(self, job: JobRow) -> RunnerState:
        return self.states.get(job.id, RunnerState("running"))

    def cancel(self, job: JobRow) -> None:
        self.cancelled.append(job.id)

    def logs(self, job: JobRow, tail: int | None = None) -> str | None:
        return None


def test_starts_at_most_max_concurrent_jobs(
    store: JobStore,
    make_spec: Callable[..., JobSpec],
    settings_env: Callable[..., TrainingSettings],
) -> None:
    launcher = ScriptedLauncher()
    sup = Supervisor(store, launcher, settings_env(max_concurrent_jobs=2))
    ids = [store.create(make_spec(seed=i))[0].id for i in range(3)]
    sup.tick()
    sup.tick()
    assert [j for j, _ in launcher.launched] == ids[:2]
    assert store.get(ids[2]).status == "queued"
    assert store.get(ids[0]).runner_ref == f"ref-{ids[0]}-1"
    store.transition(ids[0], Status.SUCCEEDED, expected=[Status.RUNNING], attempt=1)
    sup.tick()
    assert [j for j, _ in launcher.launched] == ids


def test_dead_runner_is_retried_then_failed(
    store: JobStore,
    make_spec: Callable[..., JobSpec],
    settings_env: Callable[..., TrainingSettings],
) -> None:
    launcher = ScriptedLauncher()
    sup = Supervisor(store, launcher, settings_env(max_retries=1))
    job_id = store.create(make_spec())[0].id
    sup.tick()
    launcher.states[job_id] = RunnerState("exited", detail="runner killed by SIGKILL")
    sup.tick()  # reaped, re-queued and relaunched in one tick
    assert launcher.launched == [(job_id, 1), (job_id, 2)]
    assert store.get(job_id).status == "running"
    sup.tick()  # attempt 2 dies too: no retries left
    job = store.get(job_id)
    assert (job.status, job.error_reason, job.attempts) == ("failed", "runner_lost", 2)
    assert job.error_detail == "runner killed by SIGKILL (attempt 2); no retries left"
    assert launcher.cancelled == [job_id, job_id]


def test_pauses_of_a_stopping_service_do_not_use_up_a_jobs_retries(
    store: JobStore,
    make_spec: Callable[..., JobSpec],
    settings_env: Callable[..., TrainingSettings],
) -> None:
    """Two restarts of the service pause the job twice (its runner queues it to resume);
    its one real failure after them still gets the one retry it is allowed."""
    launcher = ScriptedLauncher()
    sup = Supervisor(store, launcher, settings_env(max_retries=1))
    job_id = store.create(make_spec())[0].id
    for attempt in (1, 2):
        sup.tick()
        store.pause(job_id, attempt)  # what the runner does on its service's SIGINT
    sup.tick()
    launcher.states[job_id] = RunnerState("exited", detail="runner killed by SIGKILL")
    sup.tick()  # attempt 3 died: its first failure, re-queued and relaunched
    assert launcher.launched == [(job_id, 1), (job_id, 2), (job_id, 3), (job_id, 4)]
    job = store.get(job_id)
    assert (job.status, job.attempts, job.pauses) == ("running", 4, 2)
    sup.tick()  # attempt 4 dies too: a second failure, none left
    job = store.get(job_id)
    assert (job.status, job.error_reason) == ("failed", "runner_lost")
    assert job.error_detail == "runner killed by SIGKILL (attempt 4); no retries left"


def test_platform_failures_are_not_retried(
    store: JobStore,
    make_spec: Callable[..., JobSpec],
    settings_env: Callable[..., TrainingSettings],
) -> None:
    launcher = ScriptedLauncher()
    sup = Supervisor(store, launcher, settings_env(max_retries=3))
    job_id = store.create(make_spec())[0].id
    sup.tick()
    launcher.states[job_id] = RunnerState("failed", "oom_killed", "OOMKilled", retryable=False)
    sup.tick()
    job = store.get(job_id)
    assert (job.status, job.error_reason, job.attempts) == ("failed", "oom_killed", 1)


def test_stale_heartbeat_and_slow_start(
    store: JobStore,
    make_spec: Callable[..., JobSpec],
    settings_env: Callable[..., TrainingSettings],
) -> None:
    launcher = ScriptedLauncher()
    settings = settings_env(max_retries=0, heartbeat_timeout_s=10, runner_start_timeout_s=100)
    sup = Supervisor(store, launcher, settings)
    quiet = store.create(make_spec())[0].id
    starting = store.create(make_spec(seed=1))[0].id
    store.claim_queued(2, launcher="local")
    old = utcnow() - timedelta(seconds=30)
    store.update_running(quiet, 1, heartbeat_at=old, phase="training")
    store.update_running(starting, 1, heartbeat_at=old)  # no phase yet: still starting up
    sup.reap()
    assert store.get(quiet).status == "failed"
    assert store.get(quiet).error_detail.startswith("no heartbeat for over 10s")  # type: ignore[union-attr]
    assert store.get(starting).status == "running"
    store.update_running(starting, 1, heartbeat_at=utcnow() - timedelta(seconds=200))
    sup.reap()
    assert store.get(starting).error_detail.startswith("runner did not start in 100s")  # type: ignore[union-attr]


@contextmanager
def runner_hung_inside_a_write(db_url: str, job_id: str) -> Iterator[Connection]:
    """A second connection left inside an UPDATE of the job's row, as a runner frozen in its
    heartbeat: it holds SQLite's write lock (PostgreSQL's row lock) until it ends."""
    engine = make_engine(db_url)
    runner = engine.connect()
    runner.execute(
        text("UPDATE jobs SET heartbeat_at = heartbeat_at WHERE id = :id"), {"id": job_id}
    )
    try:
        yield runner
    finally:
        runner.rollback()
        runner.close()
        engine.dispose()


def started(call: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread


def test_a_runner_hung_inside_a_write_is_stopped_before_its_job_is_failed(
    store: JobStore,
    db_url: str,
    make_spec: Callable[..., JobSpec],
    settings_env: Callable[..., TrainingSettings],
) -> None:
    """A runner frozen inside its heartbeat's UPDATE holds the job's row (SQLite's write lock,
    PostgreSQL's row lock) until it dies: failing the job first would wait on it for good."""
    hung: list[Connection] = []

    class HungRunnerLauncher(ScriptedLauncher):
        def cancel(self, job: JobRow) -> None:
            super().cancel(job)
            hung[0].rollback()  # the runner's death ends its open transaction

    launcher = HungRunnerLauncher()
    sup = Supervisor(store, launcher, settings_env(max_retries=0, heartbeat_timeout_s=10))
    job_id = store.create(make_spec())[0].id
    store.claim_queued(1, launcher="local")
    old = utcnow() - timedelta(seconds=30)
    store.update_running(job_id, 1, heartbeat_at=old, phase="training")
    with runner_hung_inside_a_write(db_url, job_id) as runner:
        hung.append(runner)
        reaper = started(sup.reap)
        reaper.join(timeout=15)
        assert not reaper.is_alive(), "the supervisor waited on the hung runner's lock"
    reaper.join(timeout=60)
    job = store.get(job_id)
    assert (job.status, job.error_reason) == ("failed", "runner_lost")
    assert launcher.cancelled == [job_id]


def test_a_job_cancelled_while_its_runner_is_looked_at_is_left_to_the_cancel(
    store: JobStore,
    make_spec: Callable[..., JobSpec],
    settings_env: Callable[..., TrainingSettings],
) -> None:
    """The reap reads the running jobs, then asks the launcher about each runner. A cancel in
    between stops the runner itself; the runner is then gone, which is no death to handle:
    the supervisor stopped it a second time (a second DELETE of the Kubernetes Job)."""

    class CancelledMeanwhile(ScriptedLauncher):
        def status(self, job: JobRow) -> RunnerState:
            store.cancel(job.id, error_reason="cancelled", error_detail="cancelled by bob")
            self.cancel(job)  # what JobService.cancel does next
            return RunnerState("exited", detail="runner process is gone")

    launcher = CancelledMeanwhile()
    sup = Supervisor(store, launcher, settings_env(max_retries=1))
    job_id = store.create(make_spec())[0].id
    sup.launch_queued()
    sup.reap()
    assert launcher.cancelled == [job_id]  # the cancel's own stop, not a second one
    job = store.get(job_id)
    assert (job.status, job.error_detail, job.attempts) == ("cancelled", "cancelled by bob", 1)
    assert launcher.launched == [(job_id, 1)]


def test_two_supervisors_share_one_database(
    db_url: str, make_spec: Callable[..., JobSpec], settings_env: Callable[..., TrainingSettings]
) -> None:
    settings = settings_env(max_concurrent_jobs=10, max_retries=0, max_jobs_per_client=10)
    stores = [JobStore.open(db_url), JobStore.open(db_url)]
    launchers = [ScriptedLauncher(), ScriptedLauncher()]
    sups = [Supervisor(s, lch, settings) for s, lch in zip(stores, launchers, strict=True)]
    ids = [stores[0].create(make_spec(seed=i))[0].id for i in range(6)]
    threads = [threading.Thread(target=s.launch_queued) for s in sups]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    launched = launchers[0].launched + launchers[1].launched
    assert sorted(j for j, _ in launched) == sorted(ids)  # each job launched exactly once
    for lch in launchers:
        for job_id in ids:
            lch.states[job_id] = RunnerState("exited")
    threads = [threading.Thread(target=s.reap) for s in sups]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stores[0].counts()["failed"] == 6
    for s in stores:
        s.close()


def test_two_supervisors_never_exceed_the_slot_limit(
    db_url: str, make_spec: Callable[..., JobSpec], settings_env: Callable[..., TrainingSettings]
) -> None:
    settings = settings_env(max_concurrent_jobs=3)
    stores = [JobStore.open(db_url) for _ in range(4)]
    for i in range(10):
        stores[0].create(make_spec(seed=i))
    sups = [Supervisor(s, ScriptedLauncher(), settings) for s in stores]
    barrier = threading.Barrier(len(sups))

    def launch(sup: Supervisor) -> None:
        barrier.wait()
        sup.launch_queued()

    threads = [threading.Thread(target=launch, args=(s,)) for s in sups]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stores[0].counts()["running"] == 3
    for s in stores:
        s.close()


def test_with_nothing_queued_a_tick_does_not_wait_on_a_runner_hung_inside_a_write(
    store: JobStore,
    db_url: str,
    make_spec: Callable[..., JobSpec],
    settings_env: Callable[..., TrainingSettings],
) -> None:
    """A runner frozen inside a write holds SQLite's write lock; the tick used to take that
    lock to claim queued jobs even when there were none, waiting out the 30 s busy timeout
    on every tick before it could reap the runner."""
    sup = Supervisor(store, ScriptedLauncher(), settings_env(heartbeat_timeout_s=60))
    job_id = store.create(make_spec())[0].id
    store.claim_queued(1, launcher="local")
    store.update_running(job_id, 1, heartbeat_at=utcnow(), phase="training")
    with runner_hung_inside_a_write(db_url, job_id):
        ticker = started(sup.tick)
        ticker.join(timeout=10)
        assert not ticker.is_alive(), "the tick waited on the hung runner's write lock"
    ticker.join(timeout=60)
    assert store.get(job_id).status == "running"  # alive as far as anyone can tell


def test_a_halted_supervisor_launches_nothing_and_the_job_waits_queued(
    store: JobStore,
    make_spec: Callable[..., JobSpec],
    settings_env: Callable[..., TrainingSettings],
) -> None:
    launcher = ScriptedLauncher()
    sup = Supervisor(store, launcher, settings_env())
    job_id = store.create(make_spec())[0].id
    sup.halt()
    sup.tick()
    assert launcher.launched == []
    assert store.get(job_id).status == "queued" and store.get(job_id).attempts == 0


def training_app(sup: Supervisor) -> Flask:
    """A Flask app carrying the training services' extension as far as the hooks look."""
    from service.training_api.context import EXTENSION

    app = Flask(__name__)
    app.extensions[EXTENSION] = SimpleNamespace(jobs=SimpleNamespace(supervisor=sup))
    return app


def test_a_training_worker_quitting_halts_its_supervisor_before_it_exits(
    store: JobStore,
    make_spec: Callable[..., JobSpec],
    settings_env: Callable[..., TrainingSettings],
) -> None:
    """gunicorn calls `worker_int` first thing in a worker's quick quit (Ctrl-C)."""
    from service.training_api.gunicorn_conf import worker_int

    launcher = ScriptedLauncher()
    sup = Supervisor(store, launcher, settings_env())
    worker_int(SimpleNamespace())  # a worker whose app never loaded: nothing to halt
    worker_int(SimpleNamespace(wsgi=training_app(sup)))
    store.create(make_spec())
    sup.tick()
    assert launcher.launched == []


@pytest.fixture
def signal_handlers() -> Iterator[None]:
    """The test process's own handlers, put back after a test installs a worker's."""
    kept = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)}
    yield
    for sig, handler in kept.items():
        signal.signal(sig, handler)


def test_a_training_worker_stopping_gracefully_halts_its_supervisor_at_the_signal(
    store: JobStore,
    make_spec: Callable[..., JobSpec],
    settings_env: Callable[..., TrainingSettings],
    signal_handlers: None,
) -> None:
    """SIGTERM (a pod's termination, `kill` of the master) has no gunicorn hook: the
    training config's `post_worker_init` wraps the worker's own handler."""
    from gunicorn.config import Config
    from gunicorn.workers.gthread import ThreadWorker

    from service.training_api.gunicorn_conf import post_worker_init

    launcher = ScriptedLauncher()
    sup = Supervisor(store, launcher, settings_env())
    worker = ThreadWorker(0, os.getppid(), [], None, 30, Config(), None)
    worker.method_queue.init()  # as `init_process` leaves a gthread worker
    worker.wsgi = training_app(sup)
    signal.signal(signal.SIGTERM, worker.handle_exit)  # as gunicorn's init_signals leaves it
    post_worker_init(worker)
    store.create(make_spec())

    handler = signal.getsignal(signal.SIGTERM)
    assert callable(handler) and handler != worker.handle_exit
    handler(signal.SIGTERM, None)
    assert not worker.alive, "gunicorn's own graceful stop still runs"
    sup.tick()
    assert launcher.launched == []
