"""/v1/audit: the audit trail, newest first, filtered and paged (admin scope)."""

from __future__ import annotations

from datetime import datetime

from flask import Blueprint, Response, jsonify
from pydantic import BaseModel, ConfigDict, Field

from service.audit import TrainingAction
from service.auth import require
from service.paging import cursor_field
from service.parsing import parse_query
from service.training_api.context import services

bp = Blueprint("audit", __name__, url_prefix="/v1/audit")


class AuditQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    client: str | None = Field(default=None, min_length=1, max_length=255)
    action: TrainingAction | None = None
    since: datetime | None = Field(default=None, description="Records at or after this time.")
    until: datetime | None = Field(default=None, description="Records before this time.")
    cursor: str | None = cursor_field()
    limit: int = Field(default=100, ge=1, le=500)


@bp.get("")
@require("admin")
def list_audit() -> Response:
    query = parse_query(AuditQuery)
    items, next_cursor = services().jobs.audit_log.page(**query.model_dump())
    return jsonify(items=items, next_cursor=next_cursor)
