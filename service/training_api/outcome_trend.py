"""`GET /v1/models/{name}/versions/{n}/outcomes/trend`: how a version does on its reported
outcomes period by period (a week's, a month's reports), beside its card's figures; and
`GET …/outcomes/clients`: client by client (a site's scanner, a site's patients), for the
version's owner and admin keys.

The figures of every report since a version went into service average a good year with a
bad month: a new scanner, a new protocol or a new population shows in the month it began.
Each period gets accuracy, and for a binary model sensitivity and specificity at the card's
threshold, with Wilson 95% intervals (`models.outcomes.period_figures`), and names the
figures whose interval lies wholly below the card's. Periods are UTC weeks from Monday or
calendar months; only periods with reports are listed, each marked `partial` where the window
cuts it (a `since` inside it, or the period under way). Who sees whose reports is as for
`GET …/outcomes`.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify
from pydantic import Field

from models.card import ModelCard
from models.outcomes import Bucket, back, mark_partial, period_start
from service.auth import require
from service.errors import Forbidden
from service.jobs.tables import utcnow
from service.parsing import parse_query
from service.training_api.context import catalog, services
from service.training_api.outcomes import (
    OutcomesQuery,
    WindowQuery,
    reporting_client,
    sees_every_client,
)

bp = Blueprint("outcome_trend", __name__, url_prefix="/v1/models")
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
    client = reporting_client(name, card, asked.client)
    periods = services().jobs.outcome_figures.trend(
        name, version, card, client, asked.bucket, since, asked.until
    )
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
        validation=_claimed(card),
        periods=mark_partial(periods, since, asked.until, utcnow()),
    )


@bp.get("/<name>/versions/<int:version>/outcomes/clients")
@require("read")
def get_by_client(name: str, version: int) -> Response:
    """Each client's figures on its own reports (accuracy, sensitivity, specificity with
    Wilson intervals, those below the card's named), most reports first: the site where
    the version does worse shows apart from the others."""
    from models.outcomes import period_figures

    card = catalog().registry.get_card(name, version)  # 404 for one the client cannot see
    asked = parse_query(WindowQuery)
    if not sees_every_client(name, card):
        raise Forbidden("only the version's owner or an admin key sees every client's reports")
    store = services().jobs.outcomes
    found = store.reported(name, version, None, asked.since, asked.until, reporters=True)
    clients = [
        {"client": client, **period_figures(card, labels, answers)}
        for client, (labels, answers) in found.by_client().items()
    ]
    clients.sort(key=lambda c: (-c["reports"], c["client"]))
    return jsonify(
        name=name,
        version=version,
        since=asked.since.isoformat() if asked.since else None,
        until=asked.until.isoformat() if asked.until else None,
        validation=_claimed(card),
        clients=clients,
    )


def _claimed(card: ModelCard) -> dict[str, Any]:
    """The card's estimates a period's or a client's figures stand beside."""
    return {k: v.model_dump(mode="json") for k, v in card.estimates.items()
            if k in ("accuracy", "sensitivity", "specificity")}  # fmt: skip
