"""The service's own CPU per request, without HTTP: each WSGI app called in-process.

Not a test. `bench/inference.py` and `bench/compare.py` measure over loopback HTTP, where
gunicorn, the kernel and the client take their share too. This calls the apps directly, in
one process, with the same multipart request (the 512x512 PNG of `bench/inference.py`), so
what each path costs beyond the limit's loop is the app's own code:

- limit: decode + preprocess + a single-threaded onnxruntime run (one process of the limit);
- bare: `bench/bare_app.py`, the framework-free WSGI classifier;
- minimal: `bench/minimal_app.py`, the minimal Flask classifier of the issue (Werkzeug's
  multipart parser);
- flask: the same without the parser: a Flask view that slices the file out of the body as
  the bare classifier does, so what it costs beyond the bare one is Flask's request handling;
- service: `service.inference.create_app`, set up as one sync worker of the per-core layout
  runs it (`service.cores`' hooks; a single-threaded session, the request's own thread;
  Prometheus in multiprocess mode, logging at WARNING as in the HTTP benchmarks);
- service, input check: the same model published again with an input profile in its card
  (`models.input_profile`, of 256 of the shared training scans), so each answer is checked.

And where that cost comes from: the service's `GET /healthz` (no model work) back to back,
and right after an onnxruntime run of the model, as every request of a busy worker runs (that
run's own CPU, measured alone in the same round, is subtracted). Paths are interleaved in
rounds; each figure is the median over rounds of CPU time per request (`time.process_time`).

    python bench/overhead.py --rounds 12 --requests 40
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    CONTENT_TYPE,
    IMAGE,
    MODEL,
    REPO,
    build_model,
    multipart_body,
    publish,
)

CHECKED = f"{MODEL}-checked"
SHARED_SCANS = REPO.parent / "shared/data/pneumoniamnist/pneumoniamnist_trainval.npz"
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def main() -> int:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="scantune-overhead-") as tmp:
        report(interleaved(setup(Path(tmp)), args.rounds, args.requests, warm=10))
    return 0


def interleaved(
    paths: dict[str, Callable[[], Any]], rounds: int, requests: int, *, warm: int
) -> dict[str, list[float]]:
    """Each path's CPU ms per request in each round, the paths taking turns within a round
    (so a machine's drift reaches all of them alike), after `warm` calls of each: the first
    calls load code and buffers."""
    for path in paths.values():
        for _ in range(warm):
            path()
    per_request: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, path in paths.items():
            per_request[name].append(cpu_ms(path, requests))
    return per_request


def setup(work: Path) -> dict[str, Callable[[], Any]]:
    """Every path, ready to call once per request."""
    model_dir, card = prepare(work)
    from bench import bare_app, minimal_app, reference_model
    from models import scans

    png = IMAGE.read_bytes()
    body = multipart_body(png)
    session = reference_model.session(str(model_dir / "model.onnx"), 1)
    batch = scans.to_batch([scans.decode(png, "scan.png")], card.input)
    service = service_app()
    flask = flask_app()
    predict = f"/v1/models/{MODEL}:predict"
    checked = f"/v1/models/{CHECKED}:predict"

    def limit() -> None:
        image = scans.to_batch([scans.decode(png, "scan.png")], card.input)
        session.run(None, {card.outputs.input: image})

    def onnxruntime_run() -> None:
        session.run(None, {card.outputs.input: batch})

    def healthz_after_run() -> None:
        onnxruntime_run()
        call(service, "GET", "/healthz", b"")

    return {
        "limit": limit,
        "bare": lambda: call(bare_app.app, "POST", predict, body),
        "minimal": lambda: call(minimal_app.app, "POST", predict, body),
        "flask": lambda: call(flask, "POST", predict, body),
        "service": lambda: call(service, "POST", predict, body),
        "service, input check": lambda: call(service, "POST", checked, body),
        "onnxruntime run alone": onnxruntime_run,
        "service /healthz": lambda: call(service, "GET", "/healthz", b""),
        "service /healthz after a run": healthz_after_run,
    }


def prepare(work: Path) -> tuple[Path, Any]:
    """The model, published to a folder in `work`, and the service's environment for it (auth
    off, the model preloaded, one onnxruntime thread, logging at WARNING); (model dir, card)."""
    metrics_dir = work / "metrics"
    metrics_dir.mkdir()
    model_dir, card = build_model(work)
    (work / "card.json").write_text(card.to_json())
    uri = publish(model_dir, card, work / "artifacts")
    publish_checked(model_dir, card, uri)
    os.environ.update(
        BENCH_ONNX=str(model_dir / "model.onnx"),
        BENCH_CARD=str(work / "card.json"),
        SCANTUNE_ARTIFACT_URI=uri,
        SCANTUNE_AUTH_DISABLED="true",
        SCANTUNE_PRELOAD_MODELS=json.dumps([MODEL, CHECKED]),
        SCANTUNE_ORT_INTRA_OP_THREADS="1",
        SCANTUNE_LOG_LEVEL="WARNING",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
    )
    return model_dir, card


def publish_checked(model_dir: Path, card: Any, uri: str) -> None:
    """The model again as `CHECKED`, its card with a profile of 256 shared training scans."""
    import numpy as np

    from models import scans
    from models.input_profile import profile
    from service.registry import Registry
    from service.storage import open_store

    with np.load(SHARED_SCANS) as data:
        decoded = data["train_images"][:256].astype(np.float32) / 255
    size, channels = card.input.size, card.input.channels
    images = np.stack([scans.prepare(image, size, channels) for image in decoded])
    found = profile(SimpleNamespace(images=images, colour=None))
    registry = Registry(open_store(uri))
    registry.publish(CHECKED, 1, model_dir, card.model_copy(update={"input_profile": found}))
    registry.set_alias(CHECKED, "production", 1, actor="bench")


def flask_app() -> WSGIApp:
    """A Flask classifier that parses nothing: the bare classifier's work in a Flask view."""
    from flask import Flask, Response, request

    from bench import bare_app

    app = Flask("flask_classifier")

    @app.post("/v1/models/<name>:predict")
    def predict(name: str) -> Response:
        chunks: list[bytes] = []

        def start_response(status: str, headers: list[Any]) -> None:
            pass

        environ = {**request.environ, "wsgi.input": io.BytesIO(request.get_data())}
        chunks.extend(bare_app.app(environ, start_response))
        return Response(b"".join(chunks), mimetype="application/json")

    return app  # type: ignore[return-value]


def service_app() -> WSGIApp:
    """The inference app in a process set up as the per-core layout's only sync worker, with
    its model loaded."""
    from service import cores
    from service.inference import create_app

    server = SimpleNamespace(
        cfg=SimpleNamespace(worker_class=type(cores.SYNC_WORKER, (), {})), WORKERS={}
    )
    worker = SimpleNamespace()
    cores.on_starting(server)
    cores.pre_fork(server, worker)
    cores.post_fork(server, worker)
    app = create_app()
    deadline = time.monotonic() + 120
    while call(app, "GET", "/readyz", b"") != 200:
        if time.monotonic() > deadline:
            raise TimeoutError("the model never loaded")
        time.sleep(0.05)
    return app  # type: ignore[return-value]


def call(
    app: WSGIApp, method: str, path: str, body: bytes, headers: dict[str, str] | None = None
) -> int:
    """One request through `app`, as gunicorn's sync worker would make it; its status.
    `headers` as WSGI names them (HTTP_ACCEPT)."""
    statuses: list[int] = []
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8001",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8001",
        "CONTENT_TYPE": CONTENT_TYPE if body else "",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        **(headers or {}),
    }

    def start_response(status: str, headers: list[Any], exc_info: Any = None) -> None:
        statuses.append(int(status.split()[0]))

    result = app(environ, start_response)
    try:
        b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return statuses[0]


def cpu_ms(path: Callable[[], Any], requests: int) -> float:
    started = time.process_time()
    for _ in range(requests):
        path()
    return (time.process_time() - started) * 1000 / requests


def report(per_request: dict[str, list[float]]) -> None:
    def median(name: str) -> float:
        return statistics.median(per_request[name])

    def beyond(name: str, reference: str) -> str:
        diffs = [a - b for a, b in zip(per_request[name], per_request[reference], strict=True)]
        return f"{statistics.median(diffs):+.2f} ms (rounds {min(diffs):+.2f} to {max(diffs):+.2f})"

    rounds = len(per_request["limit"])
    print(f"CPU per request, in-process, median of {rounds} rounds:")
    print(f"  limit's loop: {median('limit'):.2f} ms")
    for name in ("bare", "minimal", "flask", "service", "service, input check"):
        print(f"  {name}: {median(name):.2f} ms, beyond the limit's loop {beyond(name, 'limit')}")
    print(f"  the input check, beyond the service: {beyond('service, input check', 'service')}")
    run = median("onnxruntime run alone")
    print(f"  onnxruntime run alone: {run:.2f} ms")
    print(f"  service GET /healthz back to back: {median('service /healthz'):.3f} ms")
    print(
        "  service GET /healthz right after an onnxruntime run:"
        f" {beyond('service /healthz after a run', 'onnxruntime run alone')}"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--requests", type=int, default=40, help="per path and round")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(main())
