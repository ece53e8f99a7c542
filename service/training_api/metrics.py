"""Job metrics for /metrics, read from the job store each scrape (so every worker agrees); the
figures of each version's reported outcomes, set as reports arrive."""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any

from prometheus_client import Gauge

from service.jobs.service import JobService
from service.web import shared_metrics

log = logging.getLogger(__name__)

JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED = ("succeeded", "failed", "cancelled")
RECENT = 100
QUANTILES = (0.5, 0.9, 1.0)

JOBS_BY_STATE = Gauge(
    "scantune_jobs",
    "Training jobs in the job store, by state",
    ["state"],
    multiprocess_mode="mostrecent",
)
JOB_DURATION = Gauge(
    "scantune_job_duration_seconds",
    f"Run time (started to finished) of the last {RECENT} finished jobs per state, by quantile",
    ["state", "quantile"],
    multiprocess_mode="mostrecent",
)


def observe_jobs(jobs: JobService) -> None:
    """Set the job gauges; a database that cannot be read leaves them as they were."""
    try:
        counts = jobs.job_counts()
        durations = {state: _recent_durations(jobs, state) for state in FINISHED}
    except Exception:  # /readyz reports the database; /metrics must still answer
        log.warning("could not read jobs for /metrics", exc_info=True)
        return
    for state in sorted({*JOB_STATES, *counts}):
        JOBS_BY_STATE.labels(state).set(counts.get(state, 0))
    for state, values in durations.items():
        for q in QUANTILES:
            JOB_DURATION.labels(state, f"{q:g}").set(quantile(values, q))


def _recent_durations(jobs: JobService, state: str) -> list[float]:
    views, _ = jobs.list(status=state, limit=RECENT)
    return sorted(
        (v.finished_at - v.started_at).total_seconds()
        for v in views
        if v.started_at is not None and v.finished_at is not None
    )


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile of sorted `values`; NaN when there are none."""
    if not values:
        return math.nan
    return values[max(0, math.ceil(q * len(values)) - 1)]


OUTCOMES_REPORTED = Gauge(
    "scantune_model_outcomes_reported",
    "Outcomes reported for scans the version classified (every client's)",
    ["model", "version"],
    multiprocess_mode="mostrecent",
)
REPORTED_FIGURE = Gauge(
    "scantune_model_reported_figure",
    "The version's figure on its reported outcomes (accuracy, auc, sensitivity, specificity)",
    ["model", "version", "figure"],
    multiprocess_mode="mostrecent",
)
BELOW_VALIDATION = Gauge(
    "scantune_model_below_validation",
    "Figures whose interval on the reported outcomes lies wholly below the card's",
    ["model", "version"],
    multiprocess_mode="mostrecent",
)

RECENT_BELOW_VALIDATION = Gauge(
    "scantune_model_recent_below_validation",
    "Figures whose interval on the last 28 days' reported outcomes lies wholly below the card's",
    ["model", "version"],
    multiprocess_mode="mostrecent",
)

CLIENT_BELOW_VALIDATION = Gauge(
    "scantune_model_client_below_validation",
    "Figures whose interval on one client's last 28 days' reported outcomes lies wholly below"
    " the card's (accuracy, sensitivity, specificity; client: an API key's client, no patient)",
    ["model", "version", "client"],
    multiprocess_mode="mostrecent",
)
_clients_seen: dict[tuple[str, str], set[str]] = {}  # the client gauges set, to drop the gone


def _drop_client(labels: tuple[str, str], client: str) -> None:
    """A client with no report left in the window: its gauge goes. Under gunicorn the label
    set cannot be removed from the shared files, and its last value would stay (an alert
    firing for good): it says NaN instead, "no figure", which the chart's alert skips."""
    if shared_metrics():
        CLIENT_BELOW_VALIDATION.labels(*labels, client).set(math.nan)
        return
    with contextlib.suppress(KeyError):  # cleared meanwhile
        CLIENT_BELOW_VALIDATION.remove(*labels, client)


def observe_outcomes(
    model: str,
    version: int,
    figures: dict[str, Any],
    recent: dict[str, Any],
    by_client: dict[str, dict[str, Any]],
) -> None:
    """Set the version's outcome gauges from its figures (every client's reports), from
    those of the last 28 days' reports (`recent`), and from each client's of those
    (`by_client`; a client with none left in the window loses its gauge)."""
    labels = (model, str(version))
    for client in _clients_seen.get(labels, set()) - set(by_client):
        _drop_client(labels, client)
    for client, theirs in by_client.items():
        CLIENT_BELOW_VALIDATION.labels(*labels, client).set(len(theirs["below_validation"]))
    _clients_seen[labels] = set(by_client)
    OUTCOMES_REPORTED.labels(*labels).set(figures["reports"])
    for name in ("accuracy", "auc", "sensitivity", "specificity"):
        found = figures.get(name)
        REPORTED_FIGURE.labels(*labels, name).set(found["value"] if found else math.nan)
    BELOW_VALIDATION.labels(*labels).set(len(figures["below_validation"]))
    RECENT_BELOW_VALIDATION.labels(*labels).set(len(recent["below_validation"]))
