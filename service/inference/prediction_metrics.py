"""Per-model counts, latencies, log lines and audit records of predict (v1) and infer (v2)
requests.

Both API versions' blueprints install `start_prediction` and `observe_prediction` as hooks;
their views name the model version that answered with `served_by` and the number of scans
with `counted_scans`. No scan data (file names, tags, pixels) is logged or audited.
"""

from __future__ import annotations

import logging
import time

from flask import Response, g

from service.inference import metrics

log = logging.getLogger("scantune.inference")


def start_prediction() -> None:
    g.prediction_started = time.perf_counter()


def counted_scans(count: int) -> None:
    g.scan_count = count


def studies_of(uids: set[str]) -> None:
    """The studies this request's DICOM scans belong to: audited as salted hashes only."""
    g.study_uids = uids


def served_by(name: str, version: int) -> None:
    """Record which model version answers this request (for metrics and the log line)."""
    g.model_name, g.model_version = name, version


def observe_prediction(response: Response) -> Response:
    """Count a predict/infer request by model and status; log it without any scan data."""
    started = g.get("prediction_started")
    if started is None:
        return response
    record_prediction(
        g.get("model_name", "<unresolved>"),
        str(g.get("model_version", "")),
        response.status_code,
        time.perf_counter() - started,
        g.get("request_id"),
    )
    from service.audit import hash_uid, record
    from service.inference.context import services

    principal = g.get("principal")
    salt = services().settings.audit_salt
    record(
        "prediction_served",
        client=principal.client if principal else "unknown",
        target=f"model/{g.get('model_name', '<unresolved>')}",
        outcome="served" if response.status_code < 400 else f"status {response.status_code}",
        version=g.get("model_version"),
        scans=g.get("scan_count", 0),
        studies=sorted(hash_uid(uid, salt) for uid in g.get("study_uids", ())),
    )
    return response


def record_prediction(
    name: str, version: str, status: int, elapsed: float, rid: str | None
) -> None:
    metrics.PREDICTIONS.labels(name, version, str(status)).inc()
    metrics.PREDICTION_SECONDS.labels(name, str(status)).observe(elapsed)
    log.info(
        "predict request_id=%s model=%s version=%s status=%s ms=%.1f",
        rid, name, version, status, elapsed * 1000,
    )  # fmt: skip
