"""STOW-RS (`POST /dicomweb/studies[/{study}]`, DICOM PS3.18 10.5) for sites that send over
HTTP.

The body is `multipart/related; type="application/dicom"`, one DICOM file per part, parsed
with the standard library's MIME parser. Each instance goes through the same intake as a
C-STORE; the answer is the Store Instances Response Module as DICOM JSON (pydicom writes
it): 200 when every instance was taken, 202 when some were not, 409 when none was.
The API key's name stands for the calling AE title in routing rules. Posted to one study's
URL, an instance of another study is not taken (failure reason 0xA901, as DICOM servers such
as Microsoft's answer it).
"""

from __future__ import annotations

import io
import re
from typing import Any

from flask import Blueprint, Response, current_app, g, json, request

from service.auth import require
from service.dicom_node import metrics
from service.dicom_node.intake import Intake, Refused, describe
from service.errors import BadRequest
from service.hospital.multipart import dicom_parts

bp = Blueprint("stow", __name__, url_prefix="/dicomweb")
DICOM_JSON = "application/dicom+json"
CANNOT_UNDERSTAND, PROCESSING_FAILURE, OTHER_STUDY = 0xC000, 0x0110, 0xA901
UID = re.compile(r"[0-9]+(\.[0-9]+)*")


@bp.post("/studies")
@bp.post("/studies/<study>")
@require("predict")
def store_instances(study: str | None = None) -> Response:
    if study is not None and (len(study) > 64 or not UID.fullmatch(study)):
        raise BadRequest(
            "the study in the URL is not a DICOM UID (digits and dots, at most 64 characters)",
            errors=[{"loc": "path/study", "msg": "not a UID", "type": "value_error"}],
        )
    intake: Intake = current_app.extensions["scantune.dicom"].intake
    parts = dicom_parts(request.headers.get("Content-Type", ""), request.get_data())
    stored: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for data in parts:
        ok, item = _take(intake, data, str(g.get("actor", "")), study)
        (stored if ok else failed).append(item)
    status = 200 if not failed else (202 if stored else 409)
    body = answer(stored, failed)
    return Response(json.dumps(body), status=status, mimetype=DICOM_JSON)


def _take(
    intake: Intake, data: bytes, actor: str, study: str | None
) -> tuple[bool, dict[str, Any]]:
    from pydicom import dcmread

    try:
        ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
        meta = describe(ds, actor[:16])
    except Exception:
        metrics.RECEIVED.labels("stow", "refused").inc()
        return False, {"reason": CANNOT_UNDERSTAND}
    item = {"sop_class": meta.sop_class_uid, "sop_instance": meta.sop_instance_uid}
    if study is not None and meta.study_uid != study:
        metrics.RECEIVED.labels("stow", "refused").inc()
        return False, {**item, "reason": OTHER_STUDY}
    try:
        intake.accept(data, meta, "stow")
    except Refused:
        return False, {**item, "reason": CANNOT_UNDERSTAND}
    except Exception:  # not kept: the sender may retry
        return False, {**item, "reason": PROCESSING_FAILURE}
    return True, item


def answer(stored: list[dict[str, Any]], failed: list[dict[str, Any]]) -> dict[str, Any]:
    """The Store Instances Response Module (PS3.18 10.5.3) as DICOM JSON."""
    from pydicom import Dataset

    def reference(item: dict[str, Any]) -> Dataset:
        ref = Dataset()
        if "sop_class" in item:
            ref.ReferencedSOPClassUID = item["sop_class"]
            ref.ReferencedSOPInstanceUID = item["sop_instance"]
        if "reason" in item:
            ref.FailureReason = item["reason"]
        return ref

    ds = Dataset()
    if stored:
        ds.ReferencedSOPSequence = [reference(i) for i in stored]
    if failed:
        ds.FailedSOPSequence = [reference(i) for i in failed]
    return ds.to_json_dict()
