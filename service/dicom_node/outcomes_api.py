"""`GET /v1/outcome-reports`: the scans whose outcomes the node follows, newest first, with
what became of each (waiting for the RIS's report, pending, sent, refused; retracting and
retracted once a corrected report confirmed no class), for the operator
who asks "did the report of exam X reach the training service, and if not, why?" (scope
series:read, as the series and orders are). `GET /v1/outcome-reports/exams`: the RIS's final
reports kept, each with the class it confirms for each followed model and how many scans of
the exam the node has; `held` ones have none yet (the PACS has not sent the study, or its
scans carry no accession number), the other half of that question. Both empty when no
outcomes are followed."""

from __future__ import annotations

import json
from typing import Literal

from flask import Blueprint, Response, current_app, jsonify
from pydantic import BaseModel, ConfigDict, Field

from service.auth import require
from service.dicom_node.ledger import iso_time
from service.hospital.hl7_reports import classes_named
from service.paging import cursor_field
from service.parsing import parse_query

bp = Blueprint("outcome_reports", __name__, url_prefix="/v1/outcome-reports")


class OutcomeReportsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: Literal["waiting", "pending", "sent", "refused", "retracting", "retracted"] | None = None
    cursor: str | None = cursor_field()
    limit: int = Field(default=50, ge=1, le=200)


class ExamReportsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    held: bool | None = Field(
        default=None,
        description="Only reports with no scan of their exam yet (false: only others).",
    )
    cursor: str | None = cursor_field()
    limit: int = Field(default=50, ge=1, le=200)


@bp.get("/exams")
@require("series:read")
def list_exam_reports() -> Response:
    query = parse_query(ExamReportsQuery)
    followed = current_app.extensions["scantune.dicom"].worker.outcomes
    if followed is None:
        return jsonify(items=[], next_cursor=None)
    rows, next_cursor = followed.book.exam_page(query.held, query.cursor, query.limit)
    items = []
    for row, scans in rows:
        codes = frozenset(json.loads(row.codes))
        confirms = {}
        for model in followed.codes:
            named = sorted(classes_named(followed.codes[model], codes))
            confirms[model] = named[0] if len(named) == 1 else None  # none, or two: no outcome
        items.append({
            "id": row.id, "accession_number": row.accession,
            "received_at": iso_time(row.received_at), "confirms": confirms,
            "scans": scans, "held": scans == 0,
        })  # fmt: skip
    return jsonify(items=items, next_cursor=next_cursor)


@bp.get("")
@require("series:read")
def list_outcome_reports() -> Response:
    query = parse_query(OutcomeReportsQuery)
    followed = current_app.extensions["scantune.dicom"].worker.outcomes
    if followed is None:  # SCANTUNE_DICOM_OUTCOME_CODES unset: nothing is kept
        return jsonify(items=[], next_cursor=None)
    items, next_cursor = followed.book.page(query.state, query.cursor, query.limit)
    return jsonify(items=items, next_cursor=next_cursor)
