"""`POST /v1/retrievals`: ask a source PACS for a study it holds, by Study Instance UID (and
optionally one series) or by accession number, as a RIS knows it (scope `series:retrieve`).
Its instances then come in over C-STORE and are classified and delivered like any other. The
answer names the studies and says how many instances the source sent;
`GET /v1/series?study_instance_uid=` follows what became of them. With `wait: false` it
answers 202 at once and `GET /v1/retrievals/{id}` tells how it went (`retrieval_jobs`);
`POST /v1/retrievals/{id}/cancel` stops it. A study a purge blocks is not fetched: asked by
its UID (or by an accession number that finds only such studies, waiting), the answer is 409
(`retrieve.Blocked`: it names the purge an admin may release); found beside others by an
accession number, it is left out."""

from __future__ import annotations

from typing import Literal, NoReturn

from flask import Blueprint, Response, current_app, jsonify
from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.audit import record
from service.auth import current_principal, require, visible_client
from service.dicom_node import metrics
from service.dicom_node.operations import UID_PATTERN
from service.dicom_node.redact import audit_hash
from service.dicom_node.retrieve import Asked, Blocked, NotHeld, RetrieveFailed
from service.errors import BadGateway, Conflict, InvalidRequest, NotFound
from service.paging import MAX_POSITION, cursor_field
from service.parsing import parse_body, parse_query
from service.ratelimit import limited

bp = Blueprint("retrievals", __name__, url_prefix="/v1/retrievals")
RetrievalState = Literal["running", "cancelling", "done", "not_found", "failed", "cancelled"]
# DICOM's SH value representation: 16 characters, no backslash or control character.
ACCESSION_PATTERN = r"^[^\\\x00-\x1f]{1,16}$"


class RetrievalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, max_length=64, description="A SCANTUNE_DICOM_SOURCES name.")
    study_instance_uid: str | None = Field(default=None, max_length=64, pattern=UID_PATTERN)
    series_instance_uid: str | None = Field(
        default=None, max_length=64, pattern=UID_PATTERN, description="Only this series."
    )
    accession_number: str | None = Field(
        default=None, pattern=ACCESSION_PATTERN, description="Instead of the study's UID."
    )
    wait: bool = Field(
        default=True,
        description="false: answer 202 at once; GET /v1/retrievals/{id} says how it went.",
    )

    @model_validator(mode="after")
    def _one_study(self) -> RetrievalRequest:
        if (self.study_instance_uid is None) == (self.accession_number is None):
            raise ValueError("give study_instance_uid or accession_number (one of them)")
        if self.series_instance_uid is not None and self.study_instance_uid is None:
            raise ValueError("series_instance_uid goes with study_instance_uid")
        return self


@bp.post("")
@require("series:retrieve")
@limited("retrievals")  # each one has the PACS work: a key may not flood it
def retrieve() -> Response:
    asked = parse_body(RetrievalRequest)
    node = current_app.extensions["scantune.dicom"]
    source = node.settings.source(asked.source)
    if source is None:
        names = sorted(s.name for s in node.settings.dicom_sources)
        known = ", ".join(names) or "none is configured (SCANTUNE_DICOM_SOURCES)"
        raise InvalidRequest(
            f"no source named '{asked.source}'; the sources: {known}",
            errors=[{"loc": "body/source", "msg": "unknown source", "type": "value_error"}],
        )
    wanted = Asked(asked.study_instance_uid, asked.series_instance_uid, asked.accession_number)
    client = current_principal().client
    purge_id = node.retriever.blocked(wanted.study_uid) if wanted.study_uid else None
    if purge_id is not None:  # waiting or not: nothing to start
        _blocked(asked.source, Blocked(purge_id), [str(wanted.study_uid)])
    if not asked.wait:
        view = node.retrieval_jobs.submit(source, wanted, client)
        response = jsonify(view)
        response.status_code = 202
        response.headers["Location"] = f"{bp.url_prefix}/{view['id']}"
        return response
    try:
        found = node.retriever.retrieve(source, wanted)
    except Blocked as exc:
        _blocked(asked.source, exc, [])
    except RetrieveFailed as exc:
        _refused(asked.source, [], str(exc))
    except NotHeld as exc:
        audited(client, asked.source, "not_found", [])
        raise NotFound(str(exc)) from None
    problem = found.problem(asked.source)
    if problem is not None and problem[0] == "not_found":
        audited(client, asked.source, "not_found", found.studies)
        raise NotFound(problem[1])
    if problem is not None:
        _refused(asked.source, found.studies, problem[1])
    audited(client, asked.source, "ok", found.studies, found.completed, found.failed)
    return jsonify(
        source=asked.source,
        study_instance_uids=found.studies,
        series_instance_uid=asked.series_instance_uid,
        accession_number=asked.accession_number,
        completed=found.completed,
        failed=found.failed,
        warning=found.warning,
    )


class RetrievalsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: RetrievalState | None = None
    cursor: str | None = cursor_field()
    limit: int = Field(default=50, ge=1, le=200)


@bp.get("")
@require("series:retrieve")
def list_retrievals() -> Response:
    """The client's retrievals asked with `wait: false`, newest first (an admin key: every
    client's): what it fetched lately, and what is still running."""
    query = parse_query(RetrievalsQuery)
    jobs = current_app.extensions["scantune.dicom"].retrieval_jobs
    items, next_cursor = jobs.page(visible_client(), query.state, query.cursor, query.limit)
    return jsonify(items=items, next_cursor=next_cursor)


@bp.get("/<int:retrieval_id>")
@require("series:retrieve")
def get_retrieval(retrieval_id: int) -> Response:
    """A retrieval asked with `wait: false`: running, done, not_found or failed. Another
    client's is not found (an admin key sees every one)."""
    jobs = current_app.extensions["scantune.dicom"].retrieval_jobs
    found = jobs.get(retrieval_id, visible_client()) if retrieval_id < MAX_POSITION else None
    if found is None:
        raise NotFound(f"no retrieval {retrieval_id}")
    return jsonify(found)


@bp.post("/<int:retrieval_id>/cancel")
@require("series:retrieve")
def cancel_retrieval(retrieval_id: int) -> Response:
    """Stop a retrieval asked with `wait: false` (its client's, or any with an admin key): one
    waiting to start never starts; a running one's C-MOVE is cancelled (202, `cancelling`
    until the source answers). What came before is classified. 409 once it has ended."""
    jobs = current_app.extensions["scantune.dicom"].retrieval_jobs
    outcome = jobs.cancel(retrieval_id, visible_client()) if retrieval_id < MAX_POSITION else None
    if outcome is None:
        raise NotFound(f"no retrieval {retrieval_id}")
    view, stopped = outcome
    if not stopped and view["state"] != "cancelling":  # asking twice is no conflict
        raise Conflict(f"retrieval {retrieval_id} has ended: {view['state']}")
    if stopped:
        record("retrieval_cancelled", client=current_principal().client,
               target=f"retrieval {retrieval_id}", outcome=view["state"])  # fmt: skip
    response = jsonify(view)
    response.status_code = 202
    return response


def _blocked(source: str, exc: Blocked, studies: list[str]) -> NoReturn:
    audited(current_principal().client, source, "blocked", studies)
    raise Conflict(str(exc))


def _refused(source: str, studies: list[str], why: str) -> NoReturn:
    audited(current_principal().client, source, "failed", studies)
    raise BadGateway(why)


def audited(
    client: str,
    source: str,
    outcome: str,
    studies: list[str],
    completed: int = 0,
    failed: int = 0,
) -> None:
    """Count the retrieval and record it: who asked which source, the studies as hashes
    (never a UID or an accession number). A background one ends outside any request."""
    metrics.RETRIEVALS.labels(outcome).inc()
    record(
        "study_retrieved",
        client=client,
        target=f"source {source}",
        outcome=outcome,
        studies=[audit_hash(uid) for uid in studies],
        completed=completed,
        failed=failed,
    )
