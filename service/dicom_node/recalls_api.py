"""/v1/recalls: a model version recalled at the node. `POST` (scope admin) stops its results
not yet sent and withdraws those delivered from where they went (`service.dicom_node.recalls`);
`GET` lists the recalls with what became of their withdrawals (scope series:read), and one
recall names the withdrawals not done: those a person must act on (the result was not kept,
the destination refused, the retention limit passed) and those still being tried. `POST
…/{id}/retry` (admin) sends the refused ones again once their destination is mended. `POST
…/{id}/lift` (admin, audited) lifts a recall made in error or of a version put back in
service: the version's later results go out again, while what the recall did stays (its
series recalled, its withdrawals going on); recalled again, the same recall is made anew.

Recalling at the node does not withdraw the version at the registry (`POST
…/versions/{n}/withdraw` on the training service), which stops it answering; a recall is for
the results it gave before."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, jsonify
from pydantic import BaseModel, ConfigDict, Field

from service.audit import record
from service.auth import current_principal, require
from service.dicom_node.recalls import RecallBook
from service.errors import Conflict, NotFound
from service.paging import MAX_POSITION
from service.parsing import parse_body, parse_query

bp = Blueprint("recalls", __name__, url_prefix="/v1/recalls")
log = logging.getLogger("scantune.dicom")


class RecallRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=64, description="The model's name.")
    version: int = Field(ge=1, lt=MAX_POSITION, description="The version recalled.")
    reason: str = Field(
        min_length=1, max_length=255,
        description="Why, as each destination is told (no patient data).",
    )  # fmt: skip


class LiftRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=255, description="Why it is lifted.")


class RecallsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=50, ge=1, le=200)


@bp.post("")
@require("admin")
def recall() -> Response:
    asked = parse_body(RecallRequest)
    client = current_principal().client
    recall_id, new = _book().request(asked.model, asked.version, asked.reason, client)
    if new:  # or made anew, lifted before
        record(
            "version_recalled_at_node", client=client,
            target=f"model {asked.model} version {asked.version}", outcome="ok",
            reason=asked.reason,
        )  # fmt: skip
    response = jsonify(_one(recall_id))
    response.status_code = 202 if new else 200  # applied by the worker, within a moment
    response.headers["Location"] = f"/v1/recalls/{recall_id}"
    return response


@bp.post("/<int:recall_id>/retry")
@require("admin")
def retry_recall(recall_id: int) -> Response:
    _one(recall_id)
    if not _book().retry(recall_id):
        raise Conflict(
            f"recall {recall_id} has no refused withdrawal to send again (or its results were"
            " deleted at the retention limit)"
        )
    log.info("recall %d: refused withdrawals due again, by %s", recall_id,
             current_principal().client)  # fmt: skip
    return jsonify(_one(recall_id))


@bp.post("/<int:recall_id>/lift")
@require("admin")
def lift_recall(recall_id: int) -> Response:
    """The version's later results go out again; the recall's series stay recalled and its
    withdrawals go on (a result that should stand is restored by a person where it went)."""
    asked = parse_body(LiftRequest)
    client = current_principal().client
    recalled = _one(recall_id)
    if not _book().lift(recall_id, asked.reason, client):
        raise Conflict(f"recall {recall_id} was lifted already")
    record(
        "version_recall_lifted_at_node", client=client,
        target=f"model {recalled['model']} version {recalled['version']}", outcome="ok",
        reason=asked.reason,
    )  # fmt: skip
    return jsonify(_one(recall_id))


@bp.get("")
@require("series:read")
def list_recalls() -> Response:
    return jsonify(items=_book().list(parse_query(RecallsQuery).limit))


@bp.get("/<int:recall_id>")
@require("series:read")
def get_recall(recall_id: int) -> Response:
    return jsonify(_one(recall_id))


def _book() -> RecallBook:
    book: RecallBook = current_app.extensions["scantune.dicom"].worker.recalls
    return book


def _one(recall_id: int) -> dict[str, object]:
    found = _book().get(recall_id) if recall_id < MAX_POSITION else None
    if found is None:
        raise NotFound(f"no recall {recall_id}")
    return dict(found)
