"""/v1/series: what the node received, classified and delivered, newest first, filtered by
state or study (scope series:read: no client owns a series, so a client's `read` key does not
see them), and `POST /v1/series/{id}/send-now` to try a series' pending
deliveries at once (scope admin), e.g. once a destination that was down is back, or one
that refused a result (`rejected`) has been mended."""

from __future__ import annotations

import logging
from typing import Any, Literal

from flask import Blueprint, Response, current_app, g, jsonify
from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.auth import require
from service.dicom_node.ledger import SeriesLedger
from service.dicom_node.redact import uid_hash
from service.errors import Conflict, NotFound
from service.paging import MAX_POSITION, cursor_field
from service.parsing import parse_query

bp = Blueprint("operations", __name__, url_prefix="/v1/series")
log = logging.getLogger("scantune.dicom")
UID_PATTERN = r"^[0-9]+(\.[0-9]+)*$"
State = Literal[
    "receiving", "classifying", "delivering", "done", "rejected", "unrouted", "failed", "expired",
    "recalled", "purged",
]  # fmt: skip
SENDABLE = ("receiving", "delivering", "rejected")  # what "send now" has work to try for


class SeriesQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: State | None = None
    study_instance_uid: str | None = Field(default=None, max_length=64, pattern=UID_PATTERN)
    model: str | None = Field(default=None, min_length=1, max_length=64)
    version: int | None = Field(
        default=None, ge=1, description="Only series this version classified (with model)."
    )
    cursor: str | None = cursor_field()
    limit: int = Field(default=50, ge=1, le=200)

    @model_validator(mode="after")
    def _version_of_a_model(self) -> SeriesQuery:
        if self.version is not None and self.model is None:
            raise ValueError("version needs model: a version number is one model's")
        return self


def ledger() -> SeriesLedger:
    node = current_app.extensions["scantune.dicom"]
    sources: dict[str, str] = {}
    for source in node.settings.dicom_sources:
        sources.setdefault(source.ae_title, source.name)  # the first of an AE title
    return SeriesLedger(node.queue.engine, sources)


@bp.get("")
@require("series:read")
def list_series() -> Response:
    items, next_cursor = ledger().page(**parse_query(SeriesQuery).model_dump())
    return jsonify(items=items, next_cursor=next_cursor)


@bp.get("/<int:series_id>")
@require("series:read")
def get_series(series_id: int) -> Response:
    return jsonify(_one(series_id))


@bp.post("/<int:series_id>/send-now")
@require("admin")
def send_now(series_id: int) -> Response:
    series = _one(series_id)
    if series["state"] not in SENDABLE:
        raise Conflict(f"series {series_id} has nothing left to send (it is {series['state']})")
    queue = current_app.extensions["scantune.dicom"].queue
    if series["state"] == "rejected" and queue.series(series_id).result_file is None:
        raise Conflict(f"series {series_id}: its result was deleted at the retention limit")
    queue.send_now(series_id)
    log.info(
        "series %s: pending work made due now by %s", uid_hash(series["series_instance_uid"]),
        g.get("actor", "anonymous"),
    )  # fmt: skip
    return jsonify(_one(series_id))


def _one(series_id: int) -> dict[str, Any]:
    # The id column is a 32-bit integer: a larger id is no series (not a database error).
    found = ledger().get(series_id) if series_id < MAX_POSITION else None
    if found is None:
        raise NotFound(f"no series {series_id}")
    return found
