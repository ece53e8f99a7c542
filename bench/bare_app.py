"""A framework-free reference: about the least a classifier under gunicorn can do per request.

Not part of the service. `bench/inference.py` runs it beside the service, in the same blocks,
and `bench/compare.py` in several gunicorn layouts, to show what Flask and the service's
features cost on top of HTTP: a bare WSGI callable that slices the one file out of the
multipart body, decodes and preprocesses it with the trainer's `models.scans`, runs one
onnxruntime session (single-threaded unless BENCH_INTRA_OP says otherwise; shared by the
worker's threads) and writes a small JSON body. No framework, routing, validation, auth,
metrics, logging or error handling.

    BENCH_ONNX=model.onnx BENCH_CARD=card.json \
        gunicorn --worker-class gthread --threads 4 bench.bare_app:app
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from bench import reference_model
from models import scans

card, session = reference_model.load()


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ["REQUEST_METHOD"] != "POST" or not environ["PATH_INFO"].endswith(":predict"):
        start_response("404 Not Found", [("Content-Length", "0")])
        return [b""]
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start = body.index(b"\r\n\r\n") + 4  # the first part's content: the bench sends one file
    scan = body[start : body.rindex(b"\r\n--", start)]
    batch = scans.to_batch([scans.decode(scan, "scan")], card.input)
    probs = session.run([card.outputs.probabilities], {card.outputs.input: batch})[0][0]
    out = json.dumps(
        {
            "label": card.classes[int(probs.argmax())],
            "probabilities": {c: float(p) for c, p in zip(card.classes, probs, strict=True)},
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(out)))])  # fmt: skip
    return [out]
