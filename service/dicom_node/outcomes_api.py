"""`GET /v1/outcome-reports`: the scans whose outcomes the node follows, newest first, with
what became of each (waiting for the RIS's report, pending, sent, refused; retracting and
retracted once a corrected report confirmed no class), for the operator
who asks "did the report of exam X reach the training service, and if not, why?" (scope
series:read, as the series and orders are). Empty when no outcomes are followed."""

from __future__ import annotations

from typing import Literal

from flask import Blueprint, Response, current_app, jsonify
from pydantic import BaseModel, ConfigDict, Field

from service.auth import require
from service.paging import cursor_field
from service.parsing import parse_query

bp = Blueprint("outcome_reports", __name__, url_prefix="/v1/outcome-reports")


class OutcomeReportsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: Literal["waiting", "pending", "sent", "refused", "retracting", "retracted"] | None = None
    cursor: str | None = cursor_field()
    limit: int = Field(default=50, ge=1, le=200)


@bp.get("")
@require("series:read")
def list_outcome_reports() -> Response:
    query = parse_query(OutcomeReportsQuery)
    followed = current_app.extensions["scantune.dicom"].worker.outcomes
    if followed is None:  # SCANTUNE_DICOM_OUTCOME_CODES unset: nothing is kept
        return jsonify(items=[], next_cursor=None)
    items, next_cursor = followed.book.page(query.state, query.cursor, query.limit)
    return jsonify(items=items, next_cursor=next_cursor)
