"""What both Flask apps share: request ids, body limits, JSON encoding, errors, auth, health
and metrics."""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
from collections.abc import Callable

from flask import Flask, Response, g, jsonify, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from service.auth import EXTENSION as AUTH_EXTENSION
from service.auth import KeyRing
from service.config import ApiKey, CommonSettings
from service.encoding import FiniteJSONProvider
from service.errors import UriTooLong, register_error_handlers
from service.ratelimit import EXTENSION as RATELIMIT_EXTENSION
from service.ratelimit import RateLimits

log = logging.getLogger("scantune.access")

# Longest query string either service reads (414 past it). gunicorn passes request lines up
# to 8190 bytes (`--limit-request-line`); it refuses longer ones itself, as a problem
# document through service.gunicorn_errors.
MAX_QUERY_BYTES = 4096

ReadinessCheck = Callable[[], None]
"""Raises (any exception) when a dependency is not ready; its message is reported."""


def create_base_app(import_name: str, settings: CommonSettings, *, service: str) -> Flask:
    """A Flask app with the shared plumbing installed; the caller adds its blueprints."""
    app = Flask(import_name)
    app.config["MAX_CONTENT_LENGTH"] = int(settings.max_upload_mb * 1024 * 1024)
    app.json = FiniteJSONProvider(app)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[AUTH_EXTENSION] = KeyRing(settings.api_keys, disabled=settings.auth_disabled)
    export_key_expiry([] if settings.auth_disabled else settings.api_keys)
    app.extensions["scantune.readiness"] = {}
    app.extensions[RATELIMIT_EXTENSION] = RateLimits(settings)
    register_error_handlers(app)
    _install_request_ids(app)
    _install_query_limit(app)
    _install_metrics(app, service)
    _install_health(app)
    return app


def add_readiness_check(app: Flask, name: str, check: ReadinessCheck) -> None:
    app.extensions["scantune.readiness"][name] = check


def _install_request_ids(app: Flask) -> None:
    @app.before_request
    def _start() -> None:
        g.request_id = request_id(request.headers.get("X-Request-Id", ""))
        g.started = time.perf_counter()

    @app.after_request
    def _finish(response: Response) -> Response:
        response.headers["X-Request-Id"] = g.get("request_id", "")
        return response


def _install_query_limit(app: Flask) -> None:
    @app.before_request
    def _check_query_length() -> None:
        size = len(request.query_string)
        if size > MAX_QUERY_BYTES:
            raise UriTooLong(f"the query string is {size} bytes; at most {MAX_QUERY_BYTES}")


def request_id(supplied: str) -> str:
    """The client's X-Request-Id when it is a sane one (printable, at most 128 characters),
    else a new one."""
    return supplied if 0 < len(supplied) <= 128 and supplied.isprintable() else uuid.uuid4().hex


def shared_metrics() -> bool:
    """Whether this process's metrics are shared through files with its siblings (gunicorn's
    workers): prometheus_client cannot remove a label set there, only set it."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def metrics_registry() -> CollectorRegistry:
    """The registry /metrics exposes: multiprocess-aware under gunicorn."""
    registry = CollectorRegistry()
    if shared_metrics():
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    return registry


REQUESTS = Counter(
    "scantune_http_requests_total", "HTTP requests", ["service", "method", "route", "status"]
)
LATENCY = Histogram(
    "scantune_http_request_seconds",
    "HTTP request latency",
    ["service", "method", "route"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

# Set once, when the app is made: the keys are settings, fixed for the process's life; every
# worker sets the same values, so the most recent one is any one's.
KEY_EXPIRY = Gauge(
    "scantune_api_key_expiry_timestamp_seconds",
    "When each API key (by its name) stops working, Unix time; +Inf: it never expires",
    ["key"],
    multiprocess_mode="mostrecent",
)


def export_key_expiry(keys: list[ApiKey]) -> None:
    """One gauge per key name; of two entries of one name (a key being rotated), the one that
    expires first, which stays until its entry is removed."""
    if not shared_metrics():  # a worker's own app is its first (tests make several)
        KEY_EXPIRY.clear()
    expiry: dict[str, float] = {}
    for key in keys:
        at = key.expires.timestamp() if key.expires else math.inf
        expiry[key.name] = min(at, expiry.get(key.name, math.inf))
    for name, at in expiry.items():
        KEY_EXPIRY.labels(name).set(at)


def _install_metrics(app: Flask, service: str) -> None:
    @app.after_request
    def _observe(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule else "<unmatched>"
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        record_request(
            service, request.method, route, response.status_code, elapsed, g.get("request_id")
        )
        return response

    @app.get("/metrics")
    def metrics() -> Response:
        registry = metrics_registry()
        if not shared_metrics():
            from prometheus_client import REGISTRY

            registry = REGISTRY  # type: ignore[assignment]
        for hook in app.extensions.get("scantune.metrics_hooks", []):
            hook()
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def record_request(
    service: str, method: str, route: str, status: int, elapsed: float, rid: str | None
) -> None:
    """Count and log one answered request (route as its rule, not the path: no model names
    or ids as label values)."""
    REQUESTS.labels(service, method, route, str(status)).inc()
    LATENCY.labels(service, method, route).observe(elapsed)
    log.info(
        "request_id=%s method=%s route=%s status=%s ms=%.1f",
        rid, method, route, status, elapsed * 1000,
    )  # fmt: skip


def _install_health(app: Flask) -> None:
    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok")

    @app.get("/readyz")
    def readyz() -> tuple[Response, int]:
        checks: dict[str, str] = {}
        for name, check in app.extensions["scantune.readiness"].items():
            try:
                check()
                checks[name] = "ok"
            except Exception as exc:  # not ready: say which, never why (it is unauthenticated)
                log.warning("readiness check %s failed: %s", name, type(exc).__name__)
                checks[name] = "failed"
        ready = all(v == "ok" for v in checks.values())
        return jsonify(
            status="ready" if ready else "not ready", checks=checks
        ), 200 if ready else 503
