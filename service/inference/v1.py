"""/v1: the scantune API — list models, describe one, classify scans."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from service.auth import require, visible_client
from service.errors import NotFound
from service.inference.context import services, visible_registry
from service.inference.hospital import hospital_answer, hospital_request, read_scans
from service.inference.prediction_metrics import (
    counted_scans,
    observe_prediction,
    served_by,
    start_prediction,
    studies_of,
)
from service.inference.predictor import Selector
from service.inference.queries import ModelQuery, PredictQuery
from service.inference.responses import prediction_response, sign_predictions
from service.parsing import parse_query
from service.ratelimit import limited
from service.registry import Registry

bp = Blueprint("v1", __name__, url_prefix="/v1")


@bp.before_request
def _start() -> None:
    if request.endpoint == "v1.predict":
        start_prediction()


bp.after_request(observe_prediction)


@bp.get("/models")
@require("read")
def list_models() -> Response:
    registry, manager = visible_registry(), services().manager
    return jsonify(models=[summary(name, registry, manager) for name in registry.list_models()])


@bp.get("/models/<name>")
@require("read")
def get_model(name: str) -> Response:
    query = parse_query(ModelQuery)
    registry = visible_registry()
    body = summary(name, registry, services().manager)
    alias = None if query.version else _alias_shown(registry, query.alias, body)
    version = query.version or (body["aliases"][alias] if alias else max(body["versions"]))
    card = registry.get_card(name, version).with_version(version)
    # The card is what the version was published with; who may use it and whether it is
    # withdrawn may have changed since: as this process applies them (within the recheck).
    access = registry.access_of(name, version, card)
    withdrawn = services().predictor.withdrawals.current(name, version)
    body["serving"] = {
        "version": version,
        "alias": alias,
        "card": card.model_dump(mode="json"),
        "access": None if access is None else access.model_dump(mode="json"),
        "withdrawn": None
        if withdrawn is None
        else {"reason": withdrawn.reason, "set_by": withdrawn.set_by, "set_at": withdrawn.set_at},
    }
    return jsonify(body)


@bp.post("/models/<name>:predict")
@require("predict")
@limited("predict")
def predict(name: str) -> Response:
    query = parse_query(PredictQuery)
    settings, predictor = services().settings, services().predictor
    uploads = read_scans(request, settings)
    counted_scans(len(uploads))
    selector = Selector(name, query.version, query.alias)
    model = predictor.model(selector, visible_client())
    served_by(model.name, model.version)
    asked = hospital_request(request, settings, uploads, model.card, query)
    studies_of(asked.study_uids())
    result = predictor.predict(model, selector, uploads, explain=query.explain, top_k=query.top_k)
    key = settings.prediction_signing_key
    sign_predictions(result, key.get_secret_value() if key is not None else None)
    return prediction_response(result, hospital_answer(asked, result, model, settings))


def summary(name: str, registry: Registry, manager: Any) -> dict[str, Any]:
    """The model as `registry` shows it (a client's view): versions, those withdrawn, aliases,
    those loaded."""
    versions = registry.list_versions(name)
    if not versions:
        raise NotFound(f"no model named '{name}'")
    withdrawals = services().predictor.withdrawals  # as this process applies them
    return {
        "name": name,
        "versions": versions,
        "withdrawn": [v for v in versions if withdrawals.current(name, v) is not None],
        "aliases": {a: r.version for a, r in registry.aliases(name).items()},
        "loaded": [
            {
                "version": m.version,
                "sha256": m.sha256,
                "load_seconds": round(m.load_seconds, 4),
                "preprocessing_matches": m.preprocessing_matches,
                "aliases": sorted(a for a, v in manager.aliases_of(name).items() if v == m.version),
            }
            for m in manager.loaded()
            if m.name == name and m.version in versions
        ],
    }


def _alias_shown(registry: Registry, alias: str | None, body: dict[str, Any]) -> str | None:
    """The alias a predict would use: the one asked for, else the default one if it is set."""
    if alias is not None:
        if alias not in body["aliases"]:
            # Absent (404), or present but unreadable (503): the registry says which.
            registry.get_alias(body["name"], alias)
            raise NotFound(f"model '{body['name']}' has no alias '{alias}'")
        return alias
    default = services().settings.default_alias
    return default if default in body["aliases"] else None
