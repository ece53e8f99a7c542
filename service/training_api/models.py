"""/v1/models: published models, their versions (card, metrics, artifacts), aliases, and what
may change after publishing (access, notes, withdrawal)."""

from __future__ import annotations

from typing import Any, Literal

from flask import Blueprint, Response, jsonify
from pydantic import BaseModel, ConfigDict, Field

from models.card import ModelNotes
from models.spec import AccessSpec
from service.audit import record
from service.auth import Principal, current_principal, require
from service.errors import Forbidden
from service.jobs.tenancy import check_publish, model_owner
from service.paging import cursor_field
from service.parsing import parse_body, parse_query
from service.training_api.context import catalog, services

bp = Blueprint("models", __name__, url_prefix="/v1/models")


class SetAliasBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    version: int = Field(ge=1, description="The published version the alias points to.")


@bp.get("")
@require("read")
def list_models() -> Response:
    return jsonify(items=catalog().models())


class ListVersionsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order: Literal["oldest", "newest"] = "oldest"
    cursor: str | None = cursor_field()
    limit: int = Field(default=100, ge=1, le=1000)


@bp.get("/<name>/versions")
@require("read")
def list_versions(name: str) -> Response:
    query = parse_query(ListVersionsQuery)
    page = catalog().versions(
        name, limit=query.limit, newest_first=query.order == "newest", cursor=query.cursor
    )
    return jsonify(name=name, **page)


@bp.get("/<name>/versions/<int:version>")
@require("read")
def get_version(name: str, version: int) -> Response:
    return jsonify(catalog().version(name, version))


@bp.get("/<name>/aliases")
@require("read")
def list_aliases(name: str) -> Response:
    return jsonify(name=name, items=catalog().aliases(name))


@bp.get("/<name>/aliases/<alias>")
@require("read")
def get_alias(name: str, alias: str) -> Response:
    return jsonify(catalog().alias(name, alias))


@bp.put("/<name>/aliases/<alias>")
@require("models:write")
def set_alias(name: str, alias: str) -> Response:
    catalog().existing_versions(name)  # 404 before judging the body
    body, who = parse_body(SetAliasBody), current_principal()
    if not who.admin:  # one team cannot move another team's model
        try:
            check_publish(services().jobs.store, services().settings, who.client, name)
        except Forbidden:
            record("access_denied", client=who.client, target=f"model/{name}/aliases/{alias}",
                   outcome="refused")  # fmt: skip
            raise
    moved = catalog().set_alias(name, alias, body.version, actor=who.client)
    record("alias_moved", client=who.client, target=f"model/{name}/aliases/{alias}",
           outcome="moved", version=body.version)  # fmt: skip
    return jsonify(moved)


@bp.get("/<name>/versions/<int:version>/access")
@require("read")
def get_access(name: str, version: int) -> Response:
    return jsonify(catalog().access(name, version))


@bp.put("/<name>/versions/<int:version>/access")
@require("models:write")
def set_access(name: str, version: int) -> Response:
    """Share a published version with other clients, make it private, or shared again: its
    owner's or an admin's call; every process sees it within `access_recheck_s`."""
    found = catalog().access(name, version)  # 404 before judging the body
    body, who = parse_body(AccessSpec), current_principal()
    target = f"model/{name}/versions/{version}/access"
    owner = _owner_or_admin(found, who, target, "change who uses it")
    changed = catalog().set_access(
        name, version, private=body.private, clients=body.clients, owner=owner, actor=who.client
    )
    record("access_changed", client=who.client, target=target, outcome="private"
           if body.private else "shared", clients=len(body.clients))  # fmt: skip
    return jsonify(changed)


@bp.get("/<name>/versions/<int:version>/notes")
@require("read")
def get_notes(name: str, version: int) -> Response:
    return jsonify(catalog().notes(name, version))


@bp.put("/<name>/versions/<int:version>/notes")
@require("models:write")
def set_notes(name: str, version: int) -> Response:
    """Replace a published version's notes (a limitation found in service): its owner's or an
    admin's call, as for its access, but an admin's alone for a version with no owner recorded
    (unlike access, notes do not claim one); the card keeps the notes it was published with."""
    found = catalog().access(name, version)  # 404 before judging the body
    body, who = parse_body(ModelNotes), current_principal()
    target = f"model/{name}/versions/{version}/notes"
    _owner_or_admin(found, who, target, "amend its notes", claims=False)
    changed = catalog().set_notes(name, version, body, actor=who.client)
    record("notes_changed", client=who.client, target=target, outcome="amended",
           limitations=len(body.limitations))  # fmt: skip
    return jsonify(changed)


class WithdrawalBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    withdrawn: bool = Field(description="true: withdraw the version; false: put it back.")
    reason: str = Field(min_length=1, max_length=500, description="Why, for those it stops.")


@bp.get("/<name>/versions/<int:version>/withdrawal")
@require("read")
def get_withdrawal(name: str, version: int) -> Response:
    return jsonify(catalog().withdrawal(name, version))


@bp.put("/<name>/versions/<int:version>/withdrawal")
@require("models:write")
def set_withdrawal(name: str, version: int) -> Response:
    """Withdraw a version (its owner or an admin) or put it back in service (an admin): both
    services stop predicting with it within `access_recheck_s`."""
    found = catalog().access(name, version)  # 404 before judging the body
    body, who = parse_body(WithdrawalBody), current_principal()
    target = f"model/{name}/versions/{version}"
    owner = version_owner(found)
    if not who.admin and (not body.withdrawn or who.client != owner):
        if not body.withdrawn:
            why = f"only an admin key may put model '{name}' version {version} back in service"
        elif owner is None:  # a card from before owners were recorded, and no job made it
            why = f"model '{name}' version {version} has no recorded owner: an admin key may"
            why += " withdraw it"
        else:
            why = f"model '{name}' version {version} belongs to client '{owner}': only it or"
            why += " an admin key may withdraw it"
        raise _refused(who.client, target, why)
    changed = catalog().set_withdrawal(
        name, version, withdrawn=body.withdrawn, reason=body.reason, actor=who.client
    )
    action = "model_withdrawn" if body.withdrawn else "model_reinstated"
    record(action, client=who.client, target=target, outcome="done")
    return jsonify(changed)


def version_owner(access: dict[str, Any]) -> str | None:
    """A version's owner (its `catalog().access` view): its card's, else the client whose job
    took the model's first version; None for neither."""
    return access["owner"] or model_owner(services().jobs.store, access["name"])


def _owner_or_admin(
    found: dict[str, Any], who: Principal, target: str, doing: str, *, claims: bool = True
) -> str:
    """The version's owner when the caller is it or an admin; else the 403 of `doing` it,
    audited. For a version with none recorded (a card from before owners), a change that
    `claims` it makes the caller its owner; one that does not is an admin's alone."""
    name, version = found["name"], found["version"]
    owner = version_owner(found)
    if owner is None and not claims and not who.admin:
        why = f"model '{name}' version {version} has no recorded owner: an admin key may {doing}"
        raise _refused(who.client, target, why)
    owner = owner or who.client
    if not who.admin and who.client != owner:
        why = f"model '{name}' version {version} belongs to client '{owner}': only it or an"
        raise _refused(who.client, target, f"{why} admin key may {doing}")
    return owner


def _refused(client: str, target: str, why: str) -> Forbidden:
    """The 403 of a change the key may not make, recorded on the audit trail."""
    record("access_denied", client=client, target=target, outcome="refused")
    return Forbidden(why)
