"""`POST /v1/retrievals`: ask a source PACS for a study it holds (scope `series:retrieve`); its
instances then come in over C-STORE and are classified and delivered like any other. The
answer says how many instances the source sent; `GET /v1/series?study_instance_uid=` follows
what became of them."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify
from pydantic import BaseModel, ConfigDict, Field

from service.audit import record
from service.auth import current_principal, require
from service.dicom_node import metrics
from service.dicom_node.redact import uid_hash
from service.dicom_node.retrieve import NotHeld, RetrieveFailed
from service.errors import BadGateway, InvalidRequest, NotFound
from service.parsing import parse_body

bp = Blueprint("retrievals", __name__, url_prefix="/v1/retrievals")
UID_PATTERN = r"^[0-9]+(\.[0-9]+)*$"


class RetrievalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, max_length=64, description="A SCANTUNE_DICOM_SOURCES name.")
    study_instance_uid: str = Field(max_length=64, pattern=UID_PATTERN)
    series_instance_uid: str | None = Field(
        default=None, max_length=64, pattern=UID_PATTERN, description="Only this series."
    )


@bp.post("")
@require("series:retrieve")
def retrieve() -> Response:
    asked = parse_body(RetrievalRequest)
    node = current_app.extensions["scantune.dicom"]
    sources = {s.name: s for s in node.settings.dicom_sources}
    source = sources.get(asked.source)
    if source is None:
        known = ", ".join(sorted(sources)) or "none is configured (SCANTUNE_DICOM_SOURCES)"
        raise InvalidRequest(
            f"no source named '{asked.source}'; the sources: {known}",
            errors=[{"loc": "body/source", "msg": "unknown source", "type": "value_error"}],
        )
    study, series = asked.study_instance_uid, asked.series_instance_uid
    try:
        found = node.retriever.retrieve(source, study, series)
    except RetrieveFailed as exc:
        return _refused(asked.source, study, str(exc))
    except NotHeld as exc:
        _audited(asked.source, study, "not_found")
        raise NotFound(str(exc)) from None
    if found.instances == 0:  # found, yet nothing to send: as good as not there
        _audited(asked.source, study, "not_found")
        raise NotFound(f"source '{asked.source}' holds no instances of it")
    if found.completed + found.warning == 0:  # a source may report its failures as a warning
        return _refused(
            asked.source, study,
            f"source '{asked.source}' could send none of the {found.failed} instances: it"
            " must be in SCANTUNE_DICOM_ALLOWED_CALLERS and know the node's address",
        )  # fmt: skip
    _audited(asked.source, study, "ok", completed=found.completed, failed=found.failed)
    return jsonify(
        source=asked.source,
        study_instance_uid=study,
        series_instance_uid=series,
        completed=found.completed,
        failed=found.failed,
        warning=found.warning,
    )


def _refused(source: str, study: str, why: str) -> Response:
    _audited(source, study, "failed")
    raise BadGateway(why)


def _audited(source: str, study: str, outcome: str, completed: int = 0, failed: int = 0) -> None:
    metrics.RETRIEVALS.labels(outcome).inc()
    record(
        "study_retrieved",
        client=current_principal().client,
        target=f"source {source}",
        outcome=outcome,
        study=uid_hash(study),
        completed=completed,
        failed=failed,
    )
