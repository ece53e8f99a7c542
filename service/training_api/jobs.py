"""/v1/training-jobs: submit, list, follow, cancel training jobs and read their logs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from flask import Blueprint, Response, jsonify, request, url_for
from pydantic import BaseModel, ConfigDict, Field

from models.spec import MODEL_NAME_PATTERN, JobSpec
from service.audit import record
from service.auth import current_principal, require, visible_client
from service.errors import Forbidden, InvalidRequest, Unprocessable, problem
from service.jobs.store import ForeignJob
from service.paging import cursor_field
from service.parsing import parse_body, parse_query
from service.ratelimit import count_against_limit
from service.training_api.context import services

bp = Blueprint("jobs", __name__, url_prefix="/v1/training-jobs")

IDEMPOTENCY_KEY_MAX = 255


class ListJobsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None = None
    model: str | None = Field(default=None, pattern=MODEL_NAME_PATTERN)
    client: str | None = Field(default=None, min_length=1, max_length=255)
    cursor: str | None = cursor_field()
    limit: int = Field(default=50, ge=1, le=200)


class LogsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tail: int | None = Field(default=None, ge=1, le=100_000)


class SubmitQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")  # `?dryrun=1` must not queue a job

    dry_run: bool = False


@bp.post("")
@require("jobs:write")
def submit_job() -> tuple[Response, int, dict[str, str]]:
    query = parse_query(SubmitQuery)
    count_against_limit("job_checks" if query.dry_run else "jobs")
    spec, who = parse_body(JobSpec), current_principal()
    if query.dry_run:
        with _audited_refusal(who.client, spec.model_name, "job_checked"):
            check = services().jobs.dry_run(
                spec, client=who.client, may_promote=who.may("models:write")
            )
        return jsonify(check.model_dump(mode="json")), 200, {}
    with _audited_refusal(who.client, spec.model_name):
        job = services().jobs.submit(
            spec,
            idempotency_key=_idempotency_key(),
            actor=who.name,
            client=who.client,
            may_promote=who.may("models:write"),
        )
    record("job_submitted", client=who.client, target=f"job/{job.id}", outcome="accepted",
           model=job.model_name, gpus=spec.resources.gpus)  # fmt: skip
    location = url_for("jobs.get_job", job_id=job.id)
    return jsonify(job.model_dump(mode="json")), 202, {"Location": location}


@bp.get("")
@require("read")
def list_jobs() -> Response:
    query = parse_query(ListJobsQuery)
    scope = visible_client()  # None: an admin, who may pick a client
    if scope is not None and query.client not in (None, scope):
        return jsonify(items=[], next_cursor=None)  # another client's jobs: none to see
    items, next_cursor = services().jobs.list(
        status=query.status,
        model_name=query.model,
        cursor=query.cursor,
        limit=query.limit,
        client=scope or query.client,
    )
    return jsonify(items=[j.model_dump(mode="json") for j in items], next_cursor=next_cursor)


@bp.get("/<job_id>")
@require("read")
def get_job(job_id: str) -> Response:
    return jsonify(services().jobs.get(job_id, client=visible_client()).model_dump(mode="json"))


@bp.post("/<job_id>/cancel")
@require("jobs:write")
def cancel_job(job_id: str) -> Response:
    who = current_principal()
    job = services().jobs.cancel(job_id, actor=who.name, client=visible_client())
    record("job_cancelled", client=who.client, target=f"job/{job_id}", outcome="cancelled")
    return jsonify(job.model_dump(mode="json"))


@bp.get("/<job_id>/logs")
@require("read")
def get_logs(job_id: str) -> Response:
    query = parse_query(LogsQuery)
    text = services().jobs.logs(job_id, tail=query.tail, client=visible_client())
    return Response(text, mimetype="text/plain")


@bp.errorhandler(ForeignJob)
def foreign_job(exc: ForeignJob) -> Response:
    """Another client's job: a 404 like a missing one, and an access_denied record."""
    target = f"job/{request.view_args.get('job_id') if request.view_args else '?'}"
    record("access_denied", client=current_principal().client, target=target, outcome="not_found")
    return problem(exc.status, exc.title, exc.detail)


POLICY_REFUSALS = {"uri_not_allowed", "webhook_target_not_allowed", "limit_exceeded"}


@contextmanager
def _audited_refusal(client: str, model: str, event: str = "job_submitted") -> Iterator[None]:
    """Audit a submission (or a dry run's check, `event`) the policy refused: a 403
    (promotion scope, another client's model) as access_denied, a 422 for data, webhook or
    GPU limits as a refused `event`. The record names the fields and rules, never the URIs
    (they may carry tokens)."""
    try:
        yield
    except Forbidden:
        record("access_denied", client=client, target=f"model/{model}", outcome="refused")
        raise
    except Unprocessable as exc:
        broken = [e for e in exc.errors or [] if e.get("type") in POLICY_REFUSALS]
        if broken:
            record(event, client=client, target=f"model/{model}", outcome="refused",
                   rules=sorted({f"{e['loc']}: {e['type']}" for e in broken}))  # fmt: skip
        raise


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
