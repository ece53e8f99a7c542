"""/v1/models: published models, their versions (card, metrics, artifacts) and aliases."""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response, g, jsonify
from pydantic import BaseModel, ConfigDict, Field

from models.spec import MODEL_NAME_PATTERN
from service.auth import require
from service.errors import InvalidRequest
from service.registry import ALIAS_PATTERN, AliasNotFound, ModelNotFound, VersionNotFound
from service.training_api import services
from service.training_api.parsing import parse_body

bp = Blueprint("models", __name__, url_prefix="/v1/models")


class SetAliasBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    version: int = Field(ge=1, description="The published version the alias points to.")


@bp.get("")
@require("read")
def list_models() -> Response:
    registry = services().registry
    items = []
    for name in registry.list_models():
        versions = registry.list_versions(name)
        aliases = {a: r.version for a, r in registry.aliases(name).items()}
        items.append(
            {"name": name, "versions": versions, "latest_version": versions[-1], "aliases": aliases}
        )
    return jsonify(items=items)


@bp.get("/<name>/versions")
@require("read")
def list_versions(name: str) -> Response:
    registry = services().registry
    versions = _existing_versions(name)
    by_version = _aliases_by_version(name)
    items = []
    for version in versions:
        card = registry.get_card(name, version)
        items.append(
            {
                "version": version,
                "created_at": card.created_at.isoformat(),
                "base_model": card.base_model,
                "metrics": _headline_metrics(card.metrics),
                "aliases": by_version.get(version, []),
            }
        )
    return jsonify(name=name, items=items)


@bp.get("/<name>/versions/<int:version>")
@require("read")
def get_version(name: str, version: int) -> Response:
    registry = services().registry
    _existing_versions(name)
    card = registry.get_card(name, version)
    return jsonify(
        name=name,
        version=version,
        aliases=_aliases_by_version(name).get(version, []),
        metrics=card.metrics,
        artifacts=registry.artifact_uris(name, version),
        card=card.model_dump(mode="json"),
    )


@bp.get("/<name>/aliases")
@require("read")
def list_aliases(name: str) -> Response:
    _existing_versions(name)
    records = services().registry.aliases(name)
    return jsonify(name=name, items=[_alias_body(name, r.to_dict()) for r in records.values()])


@bp.get("/<name>/aliases/<alias>")
@require("read")
def get_alias(name: str, alias: str) -> Response:
    _existing_versions(name)
    if not re.match(ALIAS_PATTERN, alias):
        raise AliasNotFound(f"model '{name}' has no alias '{alias}'")
    record = services().registry.get_alias(name, alias)
    return jsonify(_alias_body(name, record.to_dict()))


@bp.put("/<name>/aliases/<alias>")
@require("models:write")
def set_alias(name: str, alias: str) -> Response:
    _existing_versions(name)
    if not re.match(ALIAS_PATTERN, alias):
        raise InvalidRequest(
            f"alias '{alias}' must match {ALIAS_PATTERN}",
            errors=[{"loc": "path/alias", "msg": f"must match {ALIAS_PATTERN}", "type": "pattern"}],
        )
    body = parse_body(SetAliasBody)
    try:
        record = services().registry.set_alias(name, alias, body.version, actor=g.actor)
    except VersionNotFound as exc:
        raise InvalidRequest(
            exc.detail,
            errors=[{"loc": "body/version", "msg": exc.detail, "type": "version_not_found"}],
        ) from None
    return jsonify(_alias_body(name, record.to_dict()))


def _existing_versions(name: str) -> list[int]:
    """The model's published versions; 404 when it has none (or the name cannot be a model)."""
    versions = services().registry.list_versions(name) if re.match(MODEL_NAME_PATTERN, name) else []
    if not versions:
        raise ModelNotFound(f"no model named '{name}'")
    return versions


def _aliases_by_version(name: str) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for alias, record in sorted(services().registry.aliases(name).items()):
        out.setdefault(record.version, []).append(alias)
    return out


def _headline_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The scalar figures of a card's metrics (per-class tables stay on the version page)."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def _alias_body(name: str, record: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, **record}
