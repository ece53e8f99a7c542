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
