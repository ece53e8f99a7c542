"""Helpers both API versions' views share: query parsing and per-model request metrics."""

from __future__ import annotations

import logging
import time
from typing import TypeVar

from flask import Response, g, request
from pydantic import BaseModel, ValidationError

from service.errors import BadRequest, validation_errors
from service.inference import metrics

M = TypeVar("M", bound=BaseModel)
log = logging.getLogger("scantune.inference")


def parse_query(model: type[M]) -> M:
    """The query string as `model`, or a 400 naming the bad parameters."""
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as exc:
        errors = validation_errors(exc, location="query")
        summary = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors[:5])
        raise BadRequest(f"invalid query: {summary}", errors=errors) from None


def start_prediction() -> None:
    g.prediction_started = time.perf_counter()


def served_by(name: str, version: int) -> None:
    """Record which model version answers this request (for metrics and the log line)."""
    g.model_name, g.model_version = name, version


def observe_prediction(response: Response) -> Response:
    """Count a predict/infer request by model and status; log it without any scan data."""
    started = g.get("prediction_started")
    if started is None:
        return response
    record_prediction(
        g.get("model_name", "<unresolved>"),
        str(g.get("model_version", "")),
        response.status_code,
        time.perf_counter() - started,
        g.get("request_id"),
    )
    return response


def record_prediction(
    name: str, version: str, status: int, elapsed: float, rid: str | None
) -> None:
    metrics.PREDICTIONS.labels(name, version, str(status)).inc()
    metrics.PREDICTION_SECONDS.labels(name, str(status)).observe(elapsed)
    log.info(
        "predict request_id=%s model=%s version=%s status=%s ms=%.1f",
        rid, name, version, status, elapsed * 1000,
    )  # fmt: skip
