"""`GET /v1/orders`: the RIS's orders newest first, for the operator who asks "did the exam
of accession X get fetched, and if not, why?" (scope series:read, as the series are)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify
from pydantic import BaseModel, ConfigDict, Field

from service.auth import require
from service.paging import cursor_field
from service.parsing import parse_query

bp = Blueprint("orders", __name__, url_prefix="/v1/orders")


class OrdersQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cursor: str | None = cursor_field()
    limit: int = Field(default=50, ge=1, le=200)


@bp.get("")
@require("series:read")
def list_orders() -> Response:
    query = parse_query(OrdersQuery)
    book = current_app.extensions["scantune.dicom"].orders
    items, next_cursor = book.page(query.cursor, query.limit)
    return jsonify(items=items, next_cursor=next_cursor)
