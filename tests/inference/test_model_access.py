"""Private model versions on the inference service: a client that may not use a version finds
it absent on every route (the 404 of a name nobody published), cannot make the service load
it, and its owner, the clients its card names and admin keys use it as before."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from models.card import ModelAccess
from service.auth import hash_key
from service.registry import Registry
from tests.inference.conftest import MODEL, Trained, _onnx_only

IMAGES = Path(__file__).resolve().parents[1] / "data" / "images"
KEYS = {  # key: (client, scopes)
    "radiology": ("radiology", ["read", "predict"]),
    "gateway": ("gateway", ["read", "predict"]),
    "ci": ("ci", ["read", "predict"]),
    "ops": ("ops", ["read", "predict", "admin"]),
}


def publish(registry: Registry, trained: Trained, version: int, access: ModelAccess | None) -> None:
    source, card = trained.dir_and_card(version)
    registry.publish(MODEL, version, _onnx_only(source), card.model_copy(update={"access": access}))


@pytest.fixture
def private_registry(tmp_path: Path, trained: Trained) -> Registry:
    """chest-xray v1 private to radiology (gateway named), `production` on it."""
    from service.storage import open_store

    reg = Registry(open_store(f"file://{tmp_path / 'access-artifacts'}"))
    publish(reg, trained, 1, ModelAccess(owner="radiology", private=True, clients=("gateway",)))
    reg.set_alias(MODEL, "production", 1, actor="test")
    return reg


def keyed(
    make_client: Callable[..., Any], registry: Registry, **settings: str
) -> Callable[[str], Any]:
    keys = [
        {"name": n, "client": c, "sha256": hash_key(f"k-{n}"), "scopes": s}
        for n, (c, s) in KEYS.items()
    ]
    app_client = make_client(
        auth_disabled="false",
        api_keys=json.dumps(keys),
        artifact_uri=registry.store.uri,
        **settings,
    )

    def call(key: str) -> Any:
        app_client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer k-{key}"
        return app_client

    return call


def png_form() -> dict[str, Any]:
    return {"file": ((IMAGES / "normal_0.png").open("rb"), "normal_0.png")}


def v2_bytes_body() -> dict[str, Any]:
    encoded = base64.b64encode((IMAGES / "normal_0.png").read_bytes()).decode()
    return {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [encoded]}]}


def test_a_private_version_is_absent_for_other_clients_on_every_route(
    make_client: Callable[..., Any], private_registry: Registry
) -> None:
    as_ = keyed(make_client, private_registry)
    nobody = as_("ci").get("/v1/models/no-such-model")
    assert nobody.status_code == 404
    routes = [
        ("get", f"/v1/models/{MODEL}", {}),
        ("get", f"/v1/models/{MODEL}?version=1", {}),
        ("post", f"/v1/models/{MODEL}:predict", {"data": png_form}),
        ("post", f"/v1/models/{MODEL}:predict?version=1", {"data": png_form}),
        ("post", f"/v1/models/{MODEL}:predict?alias=production", {"data": png_form}),
        ("get", f"/v2/models/{MODEL}", {}),
        ("get", f"/v2/models/{MODEL}/versions/1", {}),
        ("get", f"/v2/models/{MODEL}/ready", {}),
        ("post", f"/v2/models/{MODEL}/infer", {"json": v2_bytes_body}),
        ("post", f"/v2/models/{MODEL}/versions/1/infer", {"json": v2_bytes_body}),
    ]
    for method, url, body in routes:
        kwargs = {k: make() for k, make in body.items()}
        response = getattr(as_("ci"), method)(url, **kwargs)
        assert response.status_code == 404, (url, response.get_json())
        problem = response.get_json()
        detail = problem.get("detail") or problem.get("error")
        assert detail == f"no model named '{MODEL}'", (url, detail)  # as if none existed
    assert as_("ci").get("/v1/models").get_json()["models"] == []
    # the refused calls loaded nothing: the admin sees no loaded version
    assert as_("ops").get(f"/v1/models/{MODEL}").get_json()["loaded"] == []


def test_the_owner_the_clients_named_and_admins_use_a_private_version(
    make_client: Callable[..., Any], private_registry: Registry
) -> None:
    as_ = keyed(make_client, private_registry)
    for key in ("radiology", "gateway", "ops"):
        predicted = as_(key).post(f"/v1/models/{MODEL}:predict", data=png_form())
        assert predicted.status_code == 200, (key, predicted.get_json())
        assert predicted.get_json()["model"]["version"] == 1
        inferred = as_(key).post(f"/v2/models/{MODEL}/infer", json=v2_bytes_body())
        assert inferred.status_code == 200, (key, inferred.get_json())
        listed = as_(key).get("/v1/models").get_json()["models"]
        assert [m["name"] for m in listed] == [MODEL]
        serving = as_(key).get(f"/v1/models/{MODEL}").get_json()["serving"]
        published = {"owner": "radiology", "private": True, "clients": ["gateway"]}
        assert serving["card"]["access"] == serving["access"] == published
        assert serving["withdrawn"] is None


def test_a_client_sees_only_the_versions_it_may_use(
    make_client: Callable[..., Any], tmp_path: Path, trained: Trained
) -> None:
    """v1 shared (a card from before access was recorded), v2 private to radiology with
    `production` on it: ci is served v1 by number and finds `production` absent."""
    from service.storage import open_store

    registry = Registry(open_store(f"file://{tmp_path / 'access-artifacts'}"))
    publish(registry, trained, 1, None)
    publish(registry, trained, 2, ModelAccess(owner="radiology", private=True))
    registry.set_alias(MODEL, "production", 2, actor="test")
    as_ = keyed(make_client, registry)

    model = as_("ci").get(f"/v1/models/{MODEL}").get_json()
    assert (model["versions"], model["aliases"]) == ([1], {})
    assert model["serving"]["version"] == 1
    hidden_alias = as_("ci").post(f"/v1/models/{MODEL}:predict", data=png_form())
    assert hidden_alias.status_code == 404
    assert hidden_alias.get_json()["detail"] == f"model '{MODEL}' has no alias 'production'"
    hidden_version = as_("ci").post(f"/v1/models/{MODEL}:predict?version=2", data=png_form())
    assert hidden_version.get_json()["detail"] == f"model '{MODEL}' has no version 2"
    by_number = as_("ci").post(f"/v1/models/{MODEL}:predict?version=1", data=png_form())
    assert by_number.status_code == 200 and by_number.get_json()["model"]["version"] == 1
    # V2 serves the default alias's version where the client may use it, else its latest
    assert as_("ci").get(f"/v2/models/{MODEL}").get_json()["versions"] == ["1"]
    assert as_("ci").get(f"/v2/models/{MODEL}").get_json()["parameters"]["version"] == "1"
    assert as_("radiology").get(f"/v2/models/{MODEL}").get_json()["parameters"]["version"] == "2"
    radiology = as_("radiology").post(f"/v1/models/{MODEL}:predict", data=png_form())
    assert radiology.get_json()["model"]["version"] == 2


def test_sharing_and_revoking_a_version_reaches_the_inference_service(
    make_client: Callable[..., Any], private_registry: Registry
) -> None:
    """The training API changes who may use a version (`Registry.set_access`); a serving
    process applies it once its word is older than `access_recheck_s`, the model loaded."""
    as_ = keyed(make_client, private_registry)  # each process's registry: access_recheck_s 30
    assert as_("gateway").post(f"/v1/models/{MODEL}:predict", data=png_form()).status_code == 200
    assert as_("ci").post(f"/v1/models/{MODEL}:predict", data=png_form()).status_code == 404
    private_registry.set_access(
        MODEL, 1, private=True, clients=["ci"], owner="radiology", actor="radiology"
    )
    # within the recheck the process keeps its word: gateway is still served
    assert as_("gateway").post(f"/v1/models/{MODEL}:predict", data=png_form()).status_code == 200

    fresh = keyed(make_client, private_registry, access_recheck_s="0")
    revoked = fresh("gateway").post(f"/v1/models/{MODEL}:predict", data=png_form())
    assert revoked.status_code == 404
    assert revoked.get_json()["detail"] == f"no model named '{MODEL}'"
    assert (
        fresh("gateway").post(f"/v2/models/{MODEL}/infer", json=v2_bytes_body()).status_code == 404
    )
    shared = fresh("ci").post(f"/v1/models/{MODEL}:predict", data=png_form())
    assert shared.status_code == 200 and shared.get_json()["model"]["version"] == 1
    serving = fresh("ci").get(f"/v1/models/{MODEL}").get_json()["serving"]
    assert serving["access"] == {"owner": "radiology", "private": True, "clients": ["ci"]}
    assert serving["card"]["access"]["clients"] == ["gateway"]  # as it was published
    assert [m["name"] for m in fresh("ci").get("/v1/models").get_json()["models"]] == [MODEL]
    private_registry.set_access(MODEL, 1, private=False, clients=[], owner="radiology", actor="ops")
    assert fresh("gateway").post(f"/v1/models/{MODEL}:predict", data=png_form()).status_code == 200
