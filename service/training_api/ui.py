"""The dashboard at /ui/: server-rendered shells whose scripts call the API with the user's key.

The pages carry no data and need no key: each script reads the key the user typed (kept in
sessionStorage, never a cookie or a URL) and calls the same /v1 API anyone can. A strict
Content-Security-Policy allows only this origin's scripts, styles and connections.
"""

from __future__ import annotations

import re
from typing import get_args

from flask import Blueprint, Response, current_app, jsonify, render_template, request

from models.card import MODEL_NAME_PATTERN
from service.audit import TrainingAction
from service.auth import EXTENSION as AUTH_EXTENSION
from service.auth import presented_key, require
from service.config import SCOPES
from service.dicom_node.operations import State as SeriesState
from service.errors import BadRequest, NotFound
from service.training_api.context import services
from service.training_api.forward import Forwarded, InferenceForwarder, NodeForwarder

bp = Blueprint(
    "ui",
    __name__,
    url_prefix="/ui",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
PAGES = {
    "jobs": "jobs.html",
    "job": "job.html",
    "models": "models.html",
    "try": "try.html",
    "audit": "audit.html",
    "dicom": "dicom.html",
    "facts": "facts.html",
}
JOB_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MODEL_NAME = re.compile(MODEL_NAME_PATTERN)


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers.setdefault("Cache-Control", "no-store")
    return response


@bp.get("/")
def jobs_page() -> str:
    return render_template(PAGES["jobs"], page="jobs")


@bp.get("/jobs/<job_id>")
def job_page(job_id: str) -> str:
    if JOB_ID.match(job_id) is None:
        raise NotFound("no such job")
    return render_template(PAGES["job"], page="job", job_id=job_id)


@bp.get("/models")
def models_page() -> str:
    return render_template(PAGES["models"], page="models")


@bp.get("/models/<name>/versions/<int:version>")
def facts_page(name: str, version: int) -> str:
    """One version's facts, for the people who decide whether it is used (printable)."""
    if MODEL_NAME.match(name) is None:
        raise NotFound("no such model")
    return render_template(PAGES["facts"], page="facts", name=name, version=version)


@bp.get("/try")
def try_page() -> str:
    configured = services().settings.inference_url is not None
    return render_template(PAGES["try"], page="try", configured=configured)


@bp.get("/audit")
def audit_page() -> str:
    return render_template(PAGES["audit"], page="audit", actions=get_args(TrainingAction))


@bp.get("/dicom")
def dicom_page() -> str:
    configured = services().settings.dicom_node_url is not None
    states = get_args(SeriesState)
    return render_template(PAGES["dicom"], page="dicom", configured=configured, states=states)


@bp.get("/api/whoami")
def whoami() -> Response:
    """The key's name and scopes, so the pages show only the controls it may use. Any valid
    key: an operator's may hold only series:read, which the DICOM page needs."""
    key = current_app.extensions[AUTH_EXTENSION].authenticate(presented_key(), None)
    if key is None:  # auth disabled: every control
        return jsonify(name="anonymous", scopes=sorted(SCOPES))
    return jsonify(name=key.name, scopes=sorted(key.scopes))


@bp.post("/api/predict/<name>")
@require("read")
def forward_predict(name: str) -> Response:
    uploads = request.files.getlist("file")
    if not uploads:
        raise BadRequest("send the scan as the multipart field 'file'")
    files = [
        (u.filename or "scan", u.read(), u.mimetype or "application/octet-stream") for u in uploads
    ]
    forwarder = InferenceForwarder(services().settings.inference_url)
    answer = forwarder.predict(
        name,
        files,
        key=presented_key(),
        query=request.args.to_dict(),
    )
    return _relayed(answer)


@bp.get("/api/series")
@require("series:read")
def forward_series() -> Response:
    node = NodeForwarder(services().settings.dicom_node_url)
    return _relayed(node.series(request.args.to_dict(), key=presented_key()))


@bp.get("/api/orders")
@require("series:read")
def forward_orders() -> Response:
    node = NodeForwarder(services().settings.dicom_node_url)
    return _relayed(node.orders(request.args.to_dict(), key=presented_key()))


@bp.get("/api/outcome-reports")
@require("series:read")
def forward_outcome_reports() -> Response:
    node = NodeForwarder(services().settings.dicom_node_url)
    return _relayed(node.outcome_reports(request.args.to_dict(), key=presented_key()))


@bp.get("/api/outcome-reports/exams")
@require("series:read")
def forward_exam_reports() -> Response:
    node = NodeForwarder(services().settings.dicom_node_url)
    return _relayed(node.exam_reports(request.args.to_dict(), key=presented_key()))


@bp.post("/api/series/<int:series_id>/send-now")
@require("admin")
def forward_send_now(series_id: int) -> Response:
    node = NodeForwarder(services().settings.dicom_node_url)
    return _relayed(node.send_now(series_id, key=presented_key()))


@bp.post("/api/retrievals")
@require("series:retrieve")
def forward_retrieval() -> Response:
    node = NodeForwarder(services().settings.dicom_node_url)
    return _relayed(node.retrieve(request.get_json(silent=True), key=presented_key()))


@bp.get("/api/retrievals")
@require("series:retrieve")
def forward_retrievals() -> Response:
    node = NodeForwarder(services().settings.dicom_node_url)
    return _relayed(node.retrievals(request.args.to_dict(), key=presented_key()))


@bp.get("/api/retrievals/<int:retrieval_id>")
@require("series:retrieve")
def forward_retrieval_state(retrieval_id: int) -> Response:
    node = NodeForwarder(services().settings.dicom_node_url)
    return _relayed(node.retrieval(retrieval_id, key=presented_key()))


@bp.post("/api/retrievals/<int:retrieval_id>/cancel")
@require("series:retrieve")
def forward_retrieval_cancel(retrieval_id: int) -> Response:
    node = NodeForwarder(services().settings.dicom_node_url)
    return _relayed(node.cancel_retrieval(retrieval_id, key=presented_key()))


@bp.get("/api/recalls")
@require("series:read")
def forward_recalls() -> Response:
    node = NodeForwarder(services().settings.dicom_node_url)
    return _relayed(node.recalls(request.args.to_dict(), key=presented_key()))


@bp.get("/api/recalls/<int:recall_id>")
@require("series:read")
def forward_recall_state(recall_id: int) -> Response:
    node = NodeForwarder(services().settings.dicom_node_url)
    return _relayed(node.recall_state(recall_id, key=presented_key()))


@bp.post("/api/recalls")
@require("series:read")
def forward_recall() -> Response:
    """The page's recall form, for any key that sees the recalls: the node checks for admin
    (its 403 is relayed as it is, with its detail)."""
    node = NodeForwarder(services().settings.dicom_node_url)
    return _relayed(node.recall(request.get_json(silent=True), key=presented_key()))


@bp.post("/api/recalls/<int:recall_id>/retry")
@require("admin")
def forward_recall_retry(recall_id: int) -> Response:
    node = NodeForwarder(services().settings.dicom_node_url)
    return _relayed(node.recall_retry(recall_id, key=presented_key()))


@bp.post("/api/recalls/<int:recall_id>/lift")
@require("admin")
def forward_recall_lift(recall_id: int) -> Response:
    node = NodeForwarder(services().settings.dicom_node_url)
    body = request.get_json(silent=True)
    return _relayed(node.recall_lift(recall_id, body, key=presented_key()))


@bp.get("/api/purges")
@require("series:read")
def forward_purges() -> Response:
    node = NodeForwarder(services().settings.dicom_node_url)
    return _relayed(node.purges(request.args.to_dict(), key=presented_key()))


@bp.post("/api/purges")
@require("series:read")
def forward_purge() -> Response:
    """The page's purge form, for any key that sees the purges: the node checks for admin
    (its 403 is relayed as it is, with its detail). Nothing of the body is logged here."""
    node = NodeForwarder(services().settings.dicom_node_url)
    return _relayed(node.purge(request.get_json(silent=True), key=presented_key()))


@bp.post("/api/purges/<int:purge_id>/release")
@require("admin")
def forward_purge_release(purge_id: int) -> Response:
    node = NodeForwarder(services().settings.dicom_node_url)
    body = request.get_json(silent=True)
    return _relayed(node.purge_release(purge_id, body, key=presented_key()))


def _relayed(answer: Forwarded) -> Response:
    return Response(answer.body, status=answer.status, content_type=answer.content_type)
