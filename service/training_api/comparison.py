"""/v1/models/{name}/versions/{n}/comparison: a version beside another, by default the one
`production` points to. What the people who decide a promotion read first: each figure and
its difference, the intervals side by side, whether both were measured on the same scans,
the settings that changed, and each version's caveats (`models.comparison`;
`scantune models compare`)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from pydantic import BaseModel, ConfigDict, Field

from models.comparison import compare
from service.auth import require
from service.errors import InvalidRequest
from service.parsing import parse_query
from service.training_api.caveats import version_caveats
from service.training_api.context import catalog

bp = Blueprint("comparison", __name__, url_prefix="/v1/models")
DEFAULT_AGAINST = "production"


class ComparisonQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    against: str = Field(
        default=DEFAULT_AGAINST,
        min_length=1,
        max_length=64,
        description="The version to compare with: its number, or an alias pointing to it.",
    )


@bp.get("/<name>/versions/<int:version>/comparison")
@require("read")
def get_comparison(name: str, version: int) -> Response:
    asked = parse_query(ComparisonQuery).against
    registry = catalog().registry
    card = registry.get_card(name, version)  # 404 for one the client cannot see
    alias = None if asked.isdecimal() else asked
    other = registry.get_alias(name, alias).version if alias else int(asked)
    if other == version:
        said = f"alias '{alias}' points to version {version}" if alias else "the same version"
        raise InvalidRequest(
            f"nothing to compare: {said}; name another version or alias in ?against=",
            errors=[{"loc": "query/against", "msg": said, "type": "same_version"}],
        )
    against = registry.get_card(name, other)
    return jsonify(
        name=name,
        version=version,
        against={"version": other, "alias": alias},
        caveats={
            "version": version_caveats(name, version, card),
            "against": version_caveats(name, other, against),
        },
        **compare(card, against),
    )
