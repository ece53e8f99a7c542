"""/v1/training-jobs: submit, list, follow, cancel training jobs and read their logs."""

from __future__ import annotations

from typing import Literal

from flask import Blueprint, Response, g, jsonify, request, url_for
from pydantic import BaseModel, ConfigDict, Field

from models.spec import MODEL_NAME_PATTERN, JobSpec
from service.auth import require
from service.errors import InvalidRequest
from service.parsing import parse_body, parse_query
from service.training_api import services

bp = Blueprint("jobs", __name__, url_prefix="/v1/training-jobs")

IDEMPOTENCY_KEY_MAX = 255


class ListJobsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None = None
    model: str | None = Field(default=None, pattern=MODEL_NAME_PATTERN)
    cursor: str | None = Field(default=None, min_length=1, max_length=512)
    limit: int = Field(default=50, ge=1, le=200)


class LogsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tail: int | None = Field(default=None, ge=1, le=100_000)


@bp.post("")
@require("jobs:write")
def submit_job() -> tuple[Response, int, dict[str, str]]:
    spec = parse_body(JobSpec)
    job = services().jobs.submit(spec, idempotency_key=_idempotency_key(), actor=g.actor)
    location = url_for("jobs.get_job", job_id=job.id)
    return jsonify(job.model_dump(mode="json")), 202, {"Location": location}


@bp.get("")
@require("read")
def list_jobs() -> Response:
    query = parse_query(ListJobsQuery)
    items, next_cursor = services().jobs.list(
        status=query.status, model_name=query.model, cursor=query.cursor, limit=query.limit
    )
    return jsonify(items=[j.model_dump(mode="json") for j in items], next_cursor=next_cursor)


@bp.get("/<job_id>")
@require("read")
def get_job(job_id: str) -> Response:
    return jsonify(services().jobs.get(job_id).model_dump(mode="json"))


@bp.post("/<job_id>/cancel")
@require("jobs:write")
def cancel_job(job_id: str) -> Response:
    job = services().jobs.cancel(job_id, actor=g.actor)
    return jsonify(job.model_dump(mode="json"))


@bp.get("/<job_id>/logs")
@require("read")
def get_logs(job_id: str) -> Response:
    query = parse_query(LogsQuery)
    text = services().jobs.logs(job_id, tail=query.tail)
    return Response(text, mimetype="text/plain")


def _idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 0 < len(key) <= IDEMPOTENCY_KEY_MAX or not key.isascii() or not key.isprintable():
        rule = f"must be 1-{IDEMPOTENCY_KEY_MAX} printable ASCII characters"
        raise InvalidRequest(
            f"the Idempotency-Key header {rule}",
            errors=[{"loc": "header/Idempotency-Key", "msg": rule, "type": "string_pattern"}],
        )
    return key
