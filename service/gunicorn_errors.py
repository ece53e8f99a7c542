"""gunicorn's own refusals as problem documents: a request it cannot parse (a request line
or header over its limits, a malformed line) never reaches the app, and gunicorn answers it
with an HTML page. Both services' gunicorn configurations install this `post_worker_init`
hook, which gives each worker an error handler that answers those with the same RFC 9457
shape as every other error. gunicorn has no setting for its error page; this replaces the
worker's `handle_error` on the instance, through the hook gunicorn provides for it. The same
hook makes each worker's quick quit safe against the signal's timing (`quit_handler`).
"""

from __future__ import annotations

import contextlib
import json
import signal
from collections.abc import Callable
from typing import Any

from service.errors import PROBLEM_MEDIA_TYPE, problem_body

# gunicorn's parse errors of a client's request, by exact class name (gunicorn.http.errors;
# its InvalidResponseHeader* subclasses are the app's fault and stay gunicorn's 500).
BAD_REQUEST = (400, "Bad request", "the request could not be parsed as HTTP/1.1")
CLIENT_ERRORS = {
    "LimitRequestLine": (414, "URI too long", "the request line is longer than the server reads"),
    "LimitRequestHeaders": (
        431,
        "Request header fields too large",
        "the request's headers are larger than the server reads",
    ),
    **dict.fromkeys(
        [
            "InvalidRequestLine",
            "InvalidRequestMethod",
            "InvalidHTTPVersion",
            "InvalidHeader",
            "InvalidHeaderName",
            "ObsoleteFolding",
            "InvalidChunkSize",
            "ChunkMissingTerminator",
            "InvalidChunkExtension",
        ],
        BAD_REQUEST,
    ),
}


def post_worker_init(worker: Any) -> None:
    """gunicorn hook: answer unparseable requests with a problem document, and quit on the
    first SIGINT/SIGQUIT without deadlocking (`quit_handler`)."""
    original = worker.handle_error

    def handle_error(req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        answer = refusal(exc)
        if answer is None:  # the app's own failure: gunicorn logs it and answers 500
            original(req, client, addr, exc)
            return
        status, title, detail = answer
        worker.log.warning("refused a request gunicorn could not parse: %s", type(exc).__name__)
        with contextlib.suppress(OSError):
            client.sendall(response_bytes(status, title, detail))

    worker.handle_error = handle_error
    _quit_once(worker)


def _quit_once(worker: Any) -> None:
    for sig in (signal.SIGQUIT, signal.SIGINT):
        signal.signal(sig, quit_handler(worker))


def quit_handler(worker: Any) -> Callable[[int, Any], None]:
    """The worker's quick-quit (SIGQUIT, SIGINT) handler, made safe to run at any moment.

    gunicorn's gthread worker shuts its thread pool down inside the handler, taking the pool's
    shutdown lock. The main thread holds that same lock whenever it hands a connection to the
    pool (`ThreadPoolExecutor.submit`); a signal landing there ran the handler on top of it,
    which waited on a lock its own thread held until the graceful timeout SIGKILLed the worker
    (one Ctrl-C of `scantune up` in ten or so stalled 30 s, and the killed worker's runners
    outlived it). So a gthread worker's handler only queues the quit on the worker's method
    queue (a `SimpleQueue` and a pipe, both safe in a signal handler): the event loop runs it
    at once, outside any lock. Later signals are ignored: the first is already stopping the
    worker (a second re-entered the same lock). No setting of gunicorn's covers either."""
    original = worker.handle_quit
    queue = getattr(worker, "method_queue", None)
    quitting = False

    def handle_quit(sig: int, frame: Any) -> None:
        nonlocal quitting
        if quitting:
            return
        quitting = True
        if queue is not None:
            queue.defer(original, sig, frame)
        else:
            original(sig, frame)

    return handle_quit


def refusal(exc: BaseException) -> tuple[int, str, str] | None:
    """Status, title and detail for one of gunicorn's parse errors; None for anything else."""
    return CLIENT_ERRORS.get(type(exc).__name__)


def response_bytes(status: int, title: str, detail: str) -> bytes:
    body = json.dumps(problem_body(status, title, detail)).encode()
    head = (
        f"HTTP/1.1 {status} {title}\r\n"
        "Connection: close\r\n"
        f"Content-Type: {PROBLEM_MEDIA_TYPE}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body
