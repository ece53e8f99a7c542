"""`POST /v1/retrievals`: ask a source PACS for a study it holds, by Study Instance UID (and
optionally one series) or by accession number, as a RIS knows it (scope `series:retrieve`).
Its instances then come in over C-STORE and are classified and delivered like any other. The
answer names the studies and says how many instances the source sent;
`GET /v1/series?study_instance_uid=` follows what became of them."""

from __future__ import annotations

from typing import NoReturn

from flask import Blueprint, Response, current_app, jsonify
from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.audit import record
from service.auth import current_principal, require
from service.dicom_node import metrics
from service.dicom_node.operations import UID_PATTERN
from service.dicom_node.redact import uid_hash
from service.dicom_node.retrieve import Asked, NotHeld, RetrieveFailed
from service.errors import BadGateway, InvalidRequest, NotFound
from service.parsing import parse_body
from service.ratelimit import limited

bp = Blueprint("retrievals", __name__, url_prefix="/v1/retrievals")
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
    try:
        found = node.retriever.retrieve(source, wanted)
    except RetrieveFailed as exc:
        _refused(asked.source, [], str(exc))
    except NotHeld as exc:
        _audited(asked.source, [], "not_found")
        raise NotFound(str(exc)) from None
    if found.instances == 0:  # found, yet nothing to send: as good as not there
        _audited(asked.source, found.studies, "not_found")
        raise NotFound(f"source '{asked.source}' holds no instances of it")
    if found.completed + found.warning == 0:  # a source may report its failures as a warning
        _refused(
            asked.source, found.studies,
            f"source '{asked.source}' could send none of the {found.failed} instances: it"
            " must be in SCANTUNE_DICOM_ALLOWED_CALLERS and know the node's address",
        )  # fmt: skip
    _audited(asked.source, found.studies, "ok", completed=found.completed, failed=found.failed)
    return jsonify(
        source=asked.source,
        study_instance_uids=found.studies,
        series_instance_uid=asked.series_instance_uid,
        accession_number=asked.accession_number,
        completed=found.completed,
        failed=found.failed,
        warning=found.warning,
    )


def _refused(source: str, studies: list[str], why: str) -> NoReturn:
    _audited(source, studies, "failed")
    raise BadGateway(why)


def _audited(
    source: str, studies: list[str], outcome: str, completed: int = 0, failed: int = 0
) -> None:
    """Count the retrieval and record it: who asked which source, the studies as hashes
    (never a UID or an accession number)."""
    metrics.RETRIEVALS.labels(outcome).inc()
    record(
        "study_retrieved",
        client=current_principal().client,
        target=f"source {source}",
        outcome=outcome,
        studies=[uid_hash(uid) for uid in studies],
        completed=completed,
        failed=failed,
    )
