"""`GET /v1/models/{name}/versions/{n}/outcomes/trend`: how a version does on its reported
outcomes period by period (a week's, a month's reports), beside its card's figures.

The figures of every report since a version went into service average a good year with a
bad month: a new scanner, a new protocol or a new population shows in the month it began.
Each period gets accuracy, and for a binary model sensitivity and specificity at the card's
threshold, with Wilson 95% intervals (`models.outcomes.period_figures`), and names the
figures whose interval lies wholly below the card's. Periods are UTC weeks from Monday or
calendar months; only periods with reports are listed. Who sees whose reports is as for
`GET …/outcomes`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from flask import Blueprint, Response, jsonify
from pydantic import Field

from service.auth import require
from service.jobs.tables import utcnow
from service.parsing import parse_query
from service.training_api.context import catalog, services
from service.training_api.outcomes import OutcomesQuery, reporting_client

if TYPE_CHECKING:
    from models.card import ModelCard
    from service.jobs.outcomes import Reported

bp = Blueprint("outcome_trend", __name__, url_prefix="/v1/models")
Bucket = Literal["week", "month"]
SHOWN = {"week": 26, "month": 24}  # periods back from now when `since` is not given


class TrendQuery(OutcomesQuery):
    bucket: Bucket = Field(default="week", description="UTC weeks from Monday, or months.")


@bp.get("/<name>/versions/<int:version>/outcomes/trend")
@require("read")
def get_trend(name: str, version: int) -> Response:
    card = catalog().registry.get_card(name, version)  # 404 for one the client cannot see
    asked = parse_query(TrendQuery)
    since = asked.since or back(
        period_start(utcnow(), asked.bucket), asked.bucket, SHOWN[asked.bucket] - 1
    )
    client = reporting_client(name, card)
    found = services().jobs.outcomes.reported(name, version, client, since, asked.until, times=True)
    periods = trend_periods(card, found, asked.bucket)
    claimed = {k: v.model_dump(mode="json") for k, v in card.estimates.items()
               if k in ("accuracy", "sensitivity", "specificity")}  # fmt: skip
    threshold = card.threshold if len(card.classes) == 2 else None
    return jsonify(
        name=name,
        version=version,
        reported_by=client or "every client",
        bucket=asked.bucket,
        since=since.isoformat(),
        until=asked.until.isoformat() if asked.until else None,
        decision="threshold" if threshold is not None else "argmax",
        threshold=threshold.value if threshold is not None else None,
        validation=claimed,
        periods=periods,
    )


def trend_periods(card: ModelCard, found: Reported, bucket: Bucket) -> list[dict[str, Any]]:
    """The reports grouped by the period they were made in, each period's figures, oldest
    first (only periods with reports)."""
    from models.outcomes import period_figures

    grouped: dict[datetime, list[int]] = {}
    for i, at in enumerate(found.times):
        grouped.setdefault(period_start(at, bucket), []).append(i)
    periods = []
    for start in sorted(grouped):
        rows = grouped[start]
        figures = period_figures(
            card, [found.labels[i] for i in rows], [found.probabilities[i] for i in rows]
        )
        end = back(start, bucket, -1)
        periods.append({"start": start.isoformat(), "end": end.isoformat(), **figures})
    return periods


def period_start(at: datetime, bucket: Bucket) -> datetime:
    """The start of the UTC week (Monday) or month `at` falls in."""
    day = at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday()) if bucket == "week" else day.replace(day=1)


def back(start: datetime, bucket: Bucket, periods: int) -> datetime:
    """The period start `periods` before `start` (a period start; negative: after)."""
    if bucket == "week":
        return start - timedelta(weeks=periods)
    months = start.year * 12 + start.month - 1 - periods
    return start.replace(year=months // 12, month=months % 12 + 1)
