"""/v1/models/{name}/versions/{n}/caveats: what to keep in mind about a version, drawn from
its card and the outcomes reported for it, each as a code a pipeline can gate on and a plain
sentence the people who decide whether it is used can read (the dashboard's facts page shows
them; `scantune models caveats`).

What each caveat says, and why: `models.caveats`.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from models.card import ModelCard
from models.caveats import caveats
from service.auth import require
from service.training_api.context import catalog
from service.training_api.outcomes import seen_figures

bp = Blueprint("caveats", __name__, url_prefix="/v1/models")


@bp.get("/<name>/versions/<int:version>/caveats")
@require("read")
def get_caveats(name: str, version: int) -> Response:
    card = catalog().registry.get_card(name, version)  # 404 for one the client cannot see
    return jsonify(name=name, version=version, caveats=version_caveats(name, version, card))


def version_caveats(name: str, version: int, card: ModelCard) -> list[dict[str, str]]:
    """The version's caveats, `{code, text}` each, from its card, its withdrawal and the
    outcomes the request's key sees."""
    recalled = catalog().withdrawals.current(name, version)
    _, _, figures = seen_figures(name, version, card)
    found = caveats(card, {"reason": recalled.reason} if recalled else None, figures)
    return [{"code": c, "text": t} for c, t in found]
