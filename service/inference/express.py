"""The express lane: plain predict requests answered without Flask's request dispatch.

Most of what a busy worker does per request is the scan's decode and the model run; of the
rest, Flask's dispatch (request and app contexts, routing, hooks, the response object) is the
largest part, and it runs right after an onnxruntime run has streamed the model through the
CPU caches, where every line of Python costs several times its microbenchmark price
(docs/benchmarks.md). So `ExpressLane` wraps the Flask app and answers the common request
itself:

    POST /v1/models/{name}:predict   with a plain multipart, JSON (base64) or raw scan
                                     body, a Content-Length, no Content-Encoding

through the same functions the Flask view calls (auth, query model, multipart splitter,
`Predictor`, JSON provider, metrics and log lines), so the answer is the view's, byte for
byte but the timings. Everything else, and every request the lane cannot answer with a 200
(a bad key, query or scan, an unknown or unloaded model, any exception), goes to Flask with
the body it has read, so every error keeps its one problem shape. The scans are not decoded
twice for that: a refusal of them (a 4xx from `Predictor.predict`) goes along in the environ,
and the view raises it for the same model version (`views.refused_on_the_lane`).
"""

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

from flask import Flask
from pydantic import ValidationError
from werkzeug.datastructures import MultiDict
from werkzeug.http import parse_options_header

from service.auth import EXTENSION as AUTH_EXTENSION
from service.auth import KeyRing, key_in
from service.errors import ServiceError
from service.inference import EXTENSION, InferenceServices
from service.inference.predictor import Selector
from service.inference.uploads import (
    SCAN_TYPES,
    Upload,
    counted,
    file_uploads,
    from_json,
    json_or_none,
    split_plain,
)
from service.inference.v1 import PredictQuery
from service.inference.views import LANE_REFUSAL, record_prediction
from service.web import record_request, request_id

log = logging.getLogger("scantune.inference")
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
ROUTE = "/v1/models/<name>:predict"
_PATH = re.compile(r"/v1/models/([^/]+):predict")  # Flask's default converter: no slash


class ExpressLane:
    """WSGI middleware around the inference app's own `wsgi_app` (see the module doc)."""

    def __init__(self, app: Flask) -> None:
        self.flask: WSGIApp = app.wsgi_app
        self.services: InferenceServices = app.extensions[EXTENSION]
        self.keyring: KeyRing = app.extensions[AUTH_EXTENSION]
        self.max_length: int = app.config["MAX_CONTENT_LENGTH"]
        self.json = app.json

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if (
            environ["REQUEST_METHOD"] != "POST"
            or (match := _PATH.fullmatch(environ.get("PATH_INFO", ""))) is None
        ):
            return self.flask(environ, start_response)
        started = time.perf_counter()
        body = self._body(environ)
        if body is not None:
            try:
                answer = self._predict(environ, match[1], body, started)
            except ServiceError:  # Flask answers it again, with its problem shape
                answer = None
            except Exception as exc:  # and with its log of the error; a lane bug shows here
                log.warning("express lane gave a request to Flask after %s", type(exc).__name__)
                answer = None
            if answer is not None:
                start_response("200 OK", answer[0])
                return [answer[1]]
        return self.flask(environ, start_response)

    def _body(self, environ: dict[str, Any]) -> bytes | None:
        """The whole body, when the lane may take the request; the environ's input is then a
        copy of it, for Flask should the lane give the request up."""
        length = environ.get("CONTENT_LENGTH", "")
        if (
            not length.isdigit()
            or int(length) > self.max_length
            or environ.get("HTTP_CONTENT_ENCODING", "identity").strip().lower() != "identity"
            or "HTTP_TRANSFER_ENCODING" in environ
        ):
            return None
        try:
            body: bytes = environ["wsgi.input"].read(int(length))
        except OSError:  # the client went away (or timed out) mid-body: Flask's 400
            body = b""
        environ["wsgi.input"] = io.BytesIO(body)
        return body if len(body) == int(length) else None

    def _predict(
        self, environ: dict[str, Any], name: str, body: bytes, started: float
    ) -> tuple[list[tuple[str, str]], bytes] | None:
        """The 200 answer's headers and body, or None to leave the request to Flask."""
        key = key_in(environ.get("HTTP_AUTHORIZATION", ""), environ.get("HTTP_X_API_KEY"))
        self.keyring.authenticate(key, "predict")  # first: nothing of the body is parsed before
        query = _query(environ.get("QUERY_STRING", ""))  # then the cheap refusal, before the body
        if query is None:
            return None
        uploads = _uploads(environ.get("CONTENT_TYPE", ""), body)
        if uploads is None:
            return None
        rid = request_id(environ.get("HTTP_X_REQUEST_ID", ""))
        services = self.services
        counted(uploads, services.settings.max_files)
        selector = Selector(name, query.version, query.alias)
        model = services.predictor.model(selector)
        try:
            result = services.predictor.predict(
                model, selector, uploads, explain=query.explain, top_k=query.top_k
            )
        except ServiceError as exc:  # Flask answers it, without decoding the scans again
            if exc.status < 500:
                environ[LANE_REFUSAL] = ((model.name, model.version), exc)
            raise
        out = f"{self.json.dumps({'request_id': rid, **result}, separators=(',', ':'))}\n"
        data = out.encode()
        elapsed = time.perf_counter() - started
        record_prediction(model.name, str(model.version), 200, elapsed, rid)
        record_request("inference", "POST", ROUTE, 200, elapsed, rid)
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            ("X-Request-Id", rid),
        ]
        return headers, data


def _uploads(content_type: str, body: bytes) -> list[Upload] | None:
    """The scans of a plain multipart, JSON or raw-scan body; None for any other body."""
    mimetype, options = parse_options_header(content_type)
    mimetype = mimetype.lower()
    if mimetype == "multipart/form-data":
        boundary = options.get("boundary", "")
        parts = split_plain(body, boundary) if 1 <= len(boundary) <= 70 else None
        return None if parts is None else file_uploads(parts)
    if mimetype == "application/json":
        return from_json(json_or_none(body))
    if mimetype in SCAN_TYPES:
        return [Upload("body", body)]
    return None


def _query(query_string: str) -> PredictQuery | None:
    """The query as Flask's `request.args` reads it, validated; None when it is not valid."""
    if not query_string:
        return PredictQuery()
    try:
        text = query_string.encode("latin-1").decode()  # WSGI gives the bytes as latin-1
        pairs = parse_qsl(text, keep_blank_values=True, errors="werkzeug.url_quote")
        return PredictQuery.model_validate(MultiDict(pairs).to_dict())
    except (ValidationError, ValueError):  # UnicodeError is a ValueError
        return None
