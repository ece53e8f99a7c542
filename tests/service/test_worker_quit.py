"""The workers' quick-quit handler (`service.gunicorn_errors.quit_handler`) on real gunicorn
workers: Ctrl-C of `scantune up` must stop a gthread worker whatever its main thread was doing."""

from __future__ import annotations

import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from gunicorn.config import Config
from gunicorn.workers.gthread import ThreadWorker
from gunicorn.workers.sync import SyncWorker

from service.gunicorn_errors import quit_handler


def _gthread_worker() -> ThreadWorker:
    """A gthread worker as `init_process` leaves it before its event loop starts."""
    worker = ThreadWorker(0, os.getppid(), [], None, 30, Config(), None)
    worker.tpool = ThreadPoolExecutor(1)
    worker.method_queue.init()
    return worker


def test_a_quit_landing_while_the_main_thread_hands_the_pool_a_connection_stops_the_worker() -> (
    None
):
    worker = _gthread_worker()
    handle = quit_handler(worker)
    returned = threading.Event()

    def signal_inside_submit() -> None:
        # Where the main thread is while `ThreadPoolExecutor.submit` hands over a connection:
        # gunicorn's own handler shuts the pool down under this same lock and never returned.
        with worker.tpool._shutdown_lock:  # type: ignore[attr-defined]
            handle(signal.SIGINT, None)
            handle(signal.SIGQUIT, None)  # the master's quit right behind the terminal's
        returned.set()

    main = threading.Thread(target=signal_inside_submit, daemon=True)
    main.start()
    main.join(5)
    assert returned.is_set(), "the handler waited on a lock its own thread holds"
    assert worker.alive, "the quit ran inside the handler instead of the event loop"

    with pytest.raises(SystemExit) as stopped:  # the event loop's next turn runs the quit
        worker.method_queue.run_callbacks(None)
    assert stopped.value.code == 0
    assert not worker.alive
    assert worker.tpool._shutdown  # type: ignore[attr-defined]
    worker.method_queue.run_callbacks(None)  # the second signal queued nothing: no second exit


def test_a_sync_worker_quits_at_once_and_only_once() -> None:
    worker = SyncWorker(0, os.getppid(), [], None, 30, Config(), None)
    handle = quit_handler(worker)
    with pytest.raises(SystemExit):
        handle(signal.SIGINT, None)
    assert not worker.alive
    handle(signal.SIGQUIT, None)  # ignored: returns instead of exiting again
