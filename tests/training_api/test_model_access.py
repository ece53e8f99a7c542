"""Private model versions on the training service: for a client that may not use a version it
is absent from the catalog, its files and its evaluation (the 404 of a name nobody published)
and cannot be aliased; the owner, the clients its card names and admin keys see it. A job
spec chooses, the deployment's `models_private` is the default."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from flask import Flask

from models.card import ModelAccess
from service.registry import Registry
from service.storage import open_store
from tests.training_api.conftest import job_spec, publish_version
from tests.training_api.test_security import TENANT_KEYS, as_, audit, make_app, submit

__all__ = ["make_app"]  # the fixture, shared with the tenancy tests
RADIOLOGY_ONLY = ModelAccess(owner="radiology", private=True)


def set_alias(artifacts: Path, name: str, alias: str, version: int) -> None:
    Registry(open_store(artifacts.as_uri())).set_alias(name, alias, version, actor="test")


def version_routes(name: str, version: int) -> list[str]:
    base = f"/v1/models/{name}"
    return [
        f"{base}/versions",
        f"{base}/versions/{version}",
        f"{base}/versions/{version}/files",
        f"{base}/versions/{version}/files/model.onnx",
        f"{base}/versions/{version}/evaluation",
        f"{base}/aliases",
        f"{base}/aliases/production",
    ]


def test_another_clients_private_model_is_absent_for_a_client(
    make_app: Callable[..., Flask], training_env: Path
) -> None:
    artifacts = training_env / "artifacts"
    publish_version(artifacts, "brain-ct", 1, access=RADIOLOGY_ONLY)
    publish_version(artifacts, "chest-xray", 1)  # a card from before access was recorded
    app = make_app()
    assert TENANT_KEYS["ci-reader"][0] == "ci"
    set_alias(artifacts, "brain-ct", "production", 1)

    listed = as_(app, "ci-reader").get("/v1/models").get_json()["items"]
    assert [m["name"] for m in listed] == ["chest-xray"]
    for url in version_routes("brain-ct", 1):
        response = as_(app, "ci-reader").get(url)
        assert response.status_code == 404, url
        assert response.get_json()["detail"] == "no model named 'brain-ct'", url
    moved = as_(app, "ci-bot").put("/v1/models/brain-ct/aliases/staging", json={"version": 1})
    assert moved.status_code == 404
    # asking for the version by number is refused on the record; a listing is not
    refused = {(r["client"], r["target"]) for r in audit(app, action="access_denied")}
    assert refused == {("ci", "model/brain-ct/versions/1")}
    for key in ("radiology-bot", "ops"):  # the owner and an admin
        assert [m["name"] for m in as_(app, key).get("/v1/models").get_json()["items"]] == [
            "brain-ct",
            "chest-xray",
        ]
        for url in version_routes("brain-ct", 1):
            assert as_(app, key).get(url).status_code == 200, (key, url)


def test_a_client_named_on_the_card_sees_the_version_and_others_see_only_theirs(
    make_app: Callable[..., Flask], training_env: Path
) -> None:
    artifacts = training_env / "artifacts"
    publish_version(artifacts, "chest-xray", 1, access=ModelAccess(owner="ci", private=False))
    shared_with_ci = ModelAccess(owner="radiology", private=True, clients=("ci",))
    publish_version(artifacts, "chest-xray", 2, access=shared_with_ci)
    publish_version(artifacts, "chest-xray", 3, access=RADIOLOGY_ONLY)
    app = make_app()
    set_alias(artifacts, "chest-xray", "production", 3)
    set_alias(artifacts, "chest-xray", "staging", 2)

    ci = as_(app, "ci-bot")
    [model] = ci.get("/v1/models").get_json()["items"]
    assert (model["versions"], model["latest_version"]) == ([1, 2], 2)
    assert model["aliases"] == {"staging": 2}
    page = ci.get("/v1/models/chest-xray/versions").get_json()
    assert [v["version"] for v in page["items"]] == [1, 2]
    assert ci.get("/v1/models/chest-xray/versions/2").get_json()["card"]["access"] == {
        "owner": "radiology",
        "private": True,
        "clients": ["ci"],
    }
    hidden = ci.get("/v1/models/chest-xray/versions/3")
    assert hidden.get_json()["detail"] == "model 'chest-xray' has no version 3"
    alias = ci.get("/v1/models/chest-xray/aliases/production")
    assert alias.get_json()["detail"] == "model 'chest-xray' has no alias 'production'"
    # ci may move the model's aliases (no job here made it another client's), but not onto a
    # version it cannot see: the 422 of a version that does not exist
    refused = ci.put("/v1/models/chest-xray/aliases/staging", json={"version": 3})
    assert refused.status_code == 422
    assert refused.get_json()["errors"][0]["loc"] == "body/version"
    assert ci.put("/v1/models/chest-xray/aliases/staging", json={"version": 1}).status_code == 200
    radiology = as_(app, "radiology-bot").get("/v1/models").get_json()["items"][0]
    assert radiology["versions"] == [1, 2, 3]  # ci's version 1 is shared


def test_a_job_spec_says_who_may_use_its_version(
    make_app: Callable[..., Flask], dataset: Path
) -> None:
    app = make_app()
    spec = job_spec(dataset, access={"private": True, "clients": ["radiology", "radiology"]})
    job = submit(app, "ci-bot", spec)
    assert job["spec"]["access"] == {"private": True, "clients": ["radiology"]}
    problem = submit(app, "ci-bot", job_spec(dataset, access={"clients": ["x"]}), 422)
    assert any(e["loc"].startswith("body/access") for e in problem["errors"]), problem
    shared_with = job_spec(dataset, access={"private": False, "clients": ["radiology"]})
    problem = submit(app, "ci-bot", shared_with, 422)
    assert "private version only" in problem["errors"][0]["msg"]


def access_url(name: str, version: int) -> str:
    return f"/v1/models/{name}/versions/{version}/access"


def model_names(app: Flask, key: str) -> list[str]:
    return [m["name"] for m in as_(app, key).get("/v1/models").get_json()["items"]]


def test_the_owner_shares_and_revokes_a_published_version(
    make_app: Callable[..., Flask], training_env: Path
) -> None:
    artifacts = training_env / "artifacts"
    publish_version(artifacts, "chest-xray", 1, access=ModelAccess(owner="ci", private=True))
    app = make_app()
    assert model_names(app, "radiology-bot") == []
    before = as_(app, "ci-bot").get(access_url("chest-xray", 1)).get_json()
    assert (before["owner"], before["private"], before["set_by"]) == ("ci", True, None)

    shared = as_(app, "ci-bot").put(
        access_url("chest-xray", 1), json={"private": True, "clients": ["radiology", "radiology"]}
    )
    assert shared.status_code == 200, shared.get_json()
    assert shared.get_json()["clients"] == ["radiology"] and shared.get_json()["set_by"] == "ci"
    assert model_names(app, "radiology-bot") == ["chest-xray"]
    page = as_(app, "radiology-bot").get("/v1/models/chest-xray/versions").get_json()
    assert page["items"][0]["access"] == {"owner": "ci", "private": True, "clients": ["radiology"]}
    assert as_(app, "radiology-bot").get(access_url("chest-xray", 1)).status_code == 200
    # the card keeps what the version was published with
    card = as_(app, "ci-bot").get("/v1/models/chest-xray/versions/1").get_json()["card"]
    assert card["access"] == {"owner": "ci", "private": True, "clients": []}

    # another client with models:write may not change it, even while it may use it
    refused = as_(app, "radiology-lead").put(
        access_url("chest-xray", 1), json={"private": False, "clients": []}
    )
    assert refused.status_code == 403
    assert "belongs to client 'ci'" in refused.get_json()["detail"]
    assert (
        as_(app, "radiology-bot")
        .put(access_url("chest-xray", 1), json={"private": False})
        .status_code
        == 403
    )  # fmt: skip  (no models:write)

    revoked = as_(app, "ops-models").put(access_url("chest-xray", 1), json={"private": True})
    assert revoked.status_code == 200
    body = revoked.get_json()
    assert (body["owner"], body["clients"], body["set_by"]) == ("ci", [], "ops")
    assert [h["clients"] for h in body["history"]] == [["radiology"]]
    assert model_names(app, "radiology-bot") == []
    gone = as_(app, "radiology-bot").get(access_url("chest-xray", 1))
    assert gone.status_code == 404 and gone.get_json()["detail"] == "no model named 'chest-xray'"

    actions = [(r["action"], r["client"], r["outcome"]) for r in audit(app)
               if r["target"] == "model/chest-xray/versions/1/access"]  # fmt: skip
    assert ("access_changed", "ci", "private") in actions
    assert ("access_changed", "ops", "private") in actions
    assert ("access_denied", "radiology", "refused") in actions


def test_a_change_of_access_is_checked_and_reaches_other_processes(
    make_app: Callable[..., Flask], training_env: Path
) -> None:
    artifacts = training_env / "artifacts"
    publish_version(artifacts, "chest-xray", 1)  # a card from before access was recorded
    publish_version(artifacts, "brain-ct", 1, access=RADIOLOGY_ONLY)
    app = make_app(access_recheck_s=0)
    ci = as_(app, "ci-bot")
    for body, loc in [
        ({"private": False, "clients": ["radiology"]}, "body"),
        ({"clients": []}, "body/private"),
        ({"private": True, "clients": [""]}, "body/clients"),
        ({"private": True, "everyone": True}, "body/everyone"),
    ]:
        problem = ci.put(access_url("chest-xray", 1), json=body)
        assert problem.status_code == 422, body
        assert problem.get_json()["errors"][0]["loc"] == loc, problem.get_json()
    assert ci.put(access_url("chest-xray", 9), json={"private": True}).status_code == 404
    # a version the client may not see is not there to change
    hidden = ci.put(access_url("brain-ct", 1), json={"private": False})
    assert hidden.get_json()["detail"] == "no model named 'brain-ct'"

    # the older card has no owner on it: the client whose job took the model, else the first
    # to set it (no job made chest-xray here)
    made = ci.put(access_url("chest-xray", 1), json={"private": True})
    assert made.status_code == 200 and made.get_json()["owner"] == "ci"
    # another process (the inference service, another worker) sees the change once its
    # word is older than access_recheck_s
    elsewhere = Registry(open_store(artifacts.as_uri()), access_recheck_s=3600)
    from service.model_access import seen_by

    assert seen_by(elsewhere, "radiology").list_versions("chest-xray") == []
    ci.put(access_url("chest-xray", 1), json={"private": False})
    assert seen_by(elsewhere, "radiology").list_versions("chest-xray") == []  # still its word
    elsewhere.access_recheck_s = 0
    assert seen_by(elsewhere, "radiology").list_versions("chest-xray") == [1]
    assert model_names(app, "radiology-bot") == ["brain-ct", "chest-xray"]
