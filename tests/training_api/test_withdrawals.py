"""Withdrawing a published version (a recall) on the training service: its owner or an admin
withdraws it with the reason, an admin puts it back; listings say so, no alias moves onto it,
its card and files stay readable, and every change is audited with its history."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from flask import Flask

from models.card import ModelAccess
from tests.training_api.conftest import publish_version
from tests.training_api.test_model_access import RADIOLOGY_ONLY, set_alias
from tests.training_api.test_security import as_, audit, make_app

__all__ = ["make_app"]
REASON = "misses small effusions on portable films"


def url(name: str, version: int) -> str:
    return f"/v1/models/{name}/versions/{version}/withdrawal"


def test_the_owner_withdraws_a_version_and_an_admin_puts_it_back(
    make_app: Callable[..., Flask], training_env: Path
) -> None:
    artifacts = training_env / "artifacts"
    publish_version(artifacts, "chest-xray", 1, access=ModelAccess(owner="ci"))
    publish_version(artifacts, "chest-xray", 2, access=ModelAccess(owner="ci"))
    app = make_app()
    ci = as_(app, "ci-bot")
    before = ci.get(url("chest-xray", 1)).get_json()
    assert (before["withdrawn"], before["reason"], before["history"]) == (False, None, [])

    refused = as_(app, "radiology-lead").put(
        url("chest-xray", 1), json={"withdrawn": True, "reason": REASON}
    )
    assert refused.status_code == 403 and "belongs to client 'ci'" in refused.get_json()["detail"]
    done = ci.put(url("chest-xray", 1), json={"withdrawn": True, "reason": REASON})
    assert done.status_code == 200, done.get_json()
    assert (done.get_json()["withdrawn"], done.get_json()["set_by"]) == (True, "ci")

    items = ci.get("/v1/models/chest-xray/versions").get_json()["items"]
    assert [i["withdrawn"] and i["withdrawn"]["reason"] for i in items] == [REASON, None]
    detail = ci.get("/v1/models/chest-xray/versions/1")
    assert detail.status_code == 200 and detail.get_json()["withdrawn"]["set_by"] == "ci"
    assert ci.get("/v1/models/chest-xray/versions/1/files/model.onnx").status_code == 200
    moved = ci.put("/v1/models/chest-xray/aliases/production", json={"version": 1})
    assert moved.status_code == 409 and REASON in moved.get_json()["detail"]
    assert (
        ci.put("/v1/models/chest-xray/aliases/production", json={"version": 2}).status_code == 200
    )

    back = {"withdrawn": False, "reason": "the effusion finding was a labelling error"}
    assert ci.put(url("chest-xray", 1), json=back).status_code == 403  # the owner may not
    restored = as_(app, "ops-models").put(url("chest-xray", 1), json=back)
    assert restored.status_code == 200
    body = restored.get_json()
    assert (body["withdrawn"], body["set_by"]) == (False, "ops")
    assert [(h["withdrawn"], h["reason"]) for h in body["history"]] == [(True, REASON)]
    assert (
        ci.put("/v1/models/chest-xray/aliases/production", json={"version": 1}).status_code == 200
    )
    actions = {(r["action"], r["client"]) for r in audit(app)
               if r["target"] == "model/chest-xray/versions/1"}  # fmt: skip
    assert actions >= {("model_withdrawn", "ci"), ("model_reinstated", "ops"),
                       ("access_denied", "radiology"), ("access_denied", "ci")}  # fmt: skip


def test_a_withdrawal_is_checked_and_a_hidden_version_is_not_there_to_withdraw(
    make_app: Callable[..., Flask], training_env: Path
) -> None:
    artifacts = training_env / "artifacts"
    publish_version(artifacts, "chest-xray", 1, access=ModelAccess(owner="ci"))
    publish_version(artifacts, "brain-ct", 1, access=RADIOLOGY_ONLY)
    app = make_app()
    ci = as_(app, "ci-bot")
    for body, loc in [
        ({"withdrawn": True}, "body/reason"),
        ({"withdrawn": True, "reason": ""}, "body/reason"),
        ({"withdrawn": "yes", "reason": "x"}, "body/withdrawn"),
        ({"withdrawn": True, "reason": "x", "by": "me"}, "body/by"),
    ]:
        problem = ci.put(url("chest-xray", 1), json=body)
        assert problem.status_code == 422, body
        assert problem.get_json()["errors"][0]["loc"] == loc, problem.get_json()
    assert ci.put(url("chest-xray", 7), json={"withdrawn": True, "reason": "x"}).status_code == 404
    publish_version(artifacts, "old-model", 1)  # a card from before owners, no job made it
    ownerless = ci.put(url("old-model", 1), json={"withdrawn": True, "reason": "x"})
    assert ownerless.status_code == 403 and "no recorded owner" in ownerless.get_json()["detail"]
    hidden = ci.put(url("brain-ct", 1), json={"withdrawn": True, "reason": "x"})
    assert hidden.get_json()["detail"] == "no model named 'brain-ct'"
    assert as_(app, "ci-reader").get(url("brain-ct", 1)).status_code == 404
    # an alias left on a version, then withdrawn, stays where it is: a person moves it
    set_alias(artifacts, "chest-xray", "production", 1)
    ci.put(url("chest-xray", 1), json={"withdrawn": True, "reason": "x"})
    assert ci.get("/v1/models/chest-xray/aliases/production").get_json()["version"] == 1
