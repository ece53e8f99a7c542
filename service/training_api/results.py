"""What the dashboard (and anyone) reads of a run: per-epoch metrics, a version's evaluation,
and a version's files streamed from the artifact store."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, stream_with_context

from service.auth import require, visible_client
from service.jobs.store import ForeignJob
from service.training_api.artifacts import VersionFiles, job_metrics
from service.training_api.context import catalog, services
from service.training_api.jobs import foreign_job

bp = Blueprint("results", __name__)
bp.register_error_handler(ForeignJob, foreign_job)  # a 404 like a missing job, audited


@bp.get("/v1/training-jobs/<job_id>/metrics")
@require("read")
def get_job_metrics(job_id: str) -> Response:
    return jsonify(job_metrics(services().jobs, job_id, visible_client()))


@bp.get("/v1/models/<name>/versions/<int:version>/evaluation")
@require("read")
def get_evaluation(name: str, version: int) -> Response:
    return jsonify(VersionFiles(catalog().registry).evaluation(name, version))


@bp.get("/v1/models/<name>/versions/<int:version>/files")
@require("read")
def list_files(name: str, version: int) -> Response:
    return jsonify(
        name=name, version=version, items=VersionFiles(catalog().registry).names(name, version)
    )


@bp.get("/v1/models/<name>/versions/<int:version>/files/<path:file>")
@require("read")
def get_file(name: str, version: int, file: str) -> Response:
    download = VersionFiles(catalog().registry).open(name, version, file)
    response = Response(stream_with_context(download.chunks), mimetype=download.media_type)
    response.headers["Content-Disposition"] = f'attachment; filename="{download.name}"'
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
