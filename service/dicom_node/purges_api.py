"""/v1/purges: a study sent to the node by mistake, forgotten. `POST` (scope admin, audited
as `study_purged_at_node` with the study as its salted hash) records the purge; the queue
worker applies it within a moment (`service.dicom_node.purges`): nothing of the study goes
out after, and the node keeps nothing of it. `GET` (scope series:read) shows what each purge
did, and the results delivered before it, by destination: those the node cannot take back,
a person must remove them where they went. Neither the answers nor the record name the study,
in clear or hashed."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify
from pydantic import BaseModel, ConfigDict, Field

from service.audit import record
from service.auth import current_principal, require
from service.dicom_node.operations import UID_PATTERN
from service.dicom_node.purges import PurgeBook
from service.errors import NotFound
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


class PurgesQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=50, ge=1, le=200)


@bp.post("")
@require("admin")
def purge() -> Response:
    asked = parse_body(PurgeRequest)
    client = current_principal().client
    book = _book()
    purge_id = book.request(asked.study_instance_uid, asked.reason, client)
    record(
        "study_purged_at_node", client=client, target=f"purge {purge_id}", outcome="ok",
        studies=[book.study_hash(asked.study_instance_uid)], reason=asked.reason,
    )  # fmt: skip
    response = jsonify(_one(purge_id))
    response.status_code = 202  # applied by the worker, within a moment
    response.headers["Location"] = f"/v1/purges/{purge_id}"
    return response


@bp.get("")
@require("series:read")
def list_purges() -> Response:
    return jsonify(items=_book().list(parse_query(PurgesQuery).limit))


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
