"""/v1/purges: a study sent to the node by mistake, forgotten. `POST` (scope admin, audited
as `study_purged_at_node` with the study as its salted hash) records the purge; the queue
worker applies it within a moment (`service.dicom_node.purges`): nothing of the study goes
out after, and the node keeps nothing of it. Unless `block` is false, the study is blocked
from then on: its instances sent again are acknowledged and dropped, and it is not fetched;
a purge of a study blocked already is recorded and applied all the same (the block stays).
`POST …/{id}/release` (admin, audited as `study_purge_released_at_node`) ends the block of a
study purged in error (409 if the purge blocks nothing). `GET` (scope series:read; admin to
find one study's by `?study_instance_uid=`, e.g. to tell a patient) shows what
each purge did, the results delivered before it, by destination (those the node cannot take
back: a person must remove them where they went), its block and the instances it dropped.
Neither the answers nor the records name the study, in clear or hashed."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify
from pydantic import BaseModel, ConfigDict, Field

from service.audit import record
from service.auth import current_principal, require
from service.dicom_node.operations import UID_PATTERN
from service.dicom_node.purges import PurgeBook
from service.errors import Conflict, Forbidden, NotFound
from service.paging import MAX_POSITION
from service.parsing import parse_body, parse_query

bp = Blueprint("purges", __name__, url_prefix="/v1/purges")


class PurgeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    study_instance_uid: str = Field(
        min_length=1, max_length=64, pattern=UID_PATTERN,
        description="The study to forget (kept only as its salted hash).",
    )  # fmt: skip
    reason: str = Field(
        min_length=1, max_length=255, description="Why (kept, and audited: no patient data)."
    )
    block: bool = Field(
        default=True,
        description="Block the study from then on: its instances sent again are dropped.",
    )


class ReleaseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(
        min_length=1, max_length=255, description="Why the block ends (audited: no patient data)."
    )


class PurgesQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=50, ge=1, le=200)
    study_instance_uid: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=UID_PATTERN,
        description="Only this study's purges (scope admin: that a study was purged is"
        " itself something to keep from the keys that only read the series).",
    )  # fmt: skip


@bp.post("")
@require("admin")
def purge() -> Response:
    asked = parse_body(PurgeRequest)
    client = current_principal().client
    book = _book()
    purge_id = book.request(asked.study_instance_uid, asked.reason, client, asked.block)
    record(
        "study_purged_at_node", client=client, target=f"purge {purge_id}", outcome="ok",
        studies=[book.study_hash(asked.study_instance_uid)], reason=asked.reason,
        blocked=asked.block,
    )  # fmt: skip
    response = jsonify(_one(purge_id))
    response.status_code = 202  # applied by the worker, within a moment
    response.headers["Location"] = f"/v1/purges/{purge_id}"
    return response


@bp.post("/<int:purge_id>/release")
@require("admin")
def release_purge(purge_id: int) -> Response:
    """The study comes in again (and may be fetched) as a new arrival; what the purge did
    stays done. Every purge of the study that blocks is released with this one."""
    asked = parse_body(ReleaseRequest)
    client = current_principal().client
    _one(purge_id)
    study_hash = _book().blocks.release(purge_id, asked.reason, client)
    if study_hash is None:
        raise Conflict(f"purge {purge_id} blocks nothing: made with block false, or released")
    record(
        "study_purge_released_at_node", client=client, target=f"purge {purge_id}",
        outcome="ok", studies=[study_hash], reason=asked.reason,
    )  # fmt: skip
    return jsonify(_one(purge_id))


@bp.get("")
@require("series:read")
def list_purges() -> Response:
    query = parse_query(PurgesQuery)
    if query.study_instance_uid is not None and not current_principal().may("admin"):
        raise Forbidden("finding a study's purges by its UID needs the admin scope")
    return jsonify(items=_book().list(query.limit, query.study_instance_uid))


@bp.get("/<int:purge_id>")
@require("series:read")
def get_purge(purge_id: int) -> Response:
    return jsonify(_one(purge_id))


def _book() -> PurgeBook:
    book: PurgeBook = current_app.extensions["scantune.dicom"].worker.purges
    return book


def _one(purge_id: int) -> dict[str, object]:
    found = _book().get(purge_id) if purge_id < MAX_POSITION else None
    if found is None:
        raise NotFound(f"no purge {purge_id}")
    return dict(found)
