"""A version's notes amended after publication: its owner or an admin replaces them (a
limitation found in service), the card keeps those it was published with, `GET …/notes`
answers the notes in force and where they come from, and the CLI and client do both."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from models.card import ModelAccess, ModelNotes
from service.cli import main
from service.client import Client
from tests.training_api.conftest import KEYS, publish_version
from tests.training_api.test_cli import server
from tests.training_api.test_security import as_, audit, make_app

__all__ = ["make_app", "server"]  # the fixtures
PUBLISHED = ModelNotes(
    purpose="a second read of adult PA chest films", limitations=("not tested on children",)
)
FOUND_LATER = {
    "purpose": "a second read of adult PA chest films",
    "limitations": ["not tested on children", "misses small pneumothoraces on portable films"],
    "contact": "radiology-ai@hospital.example",
}
NONE_SAID = {"purpose": None, "limitations": [], "contact": None}


def notes_url(name: str, version: int) -> str:
    return f"/v1/models/{name}/versions/{version}/notes"


def card_sha256(artifacts: Path, name: str, version: int) -> str:
    card = artifacts / "models" / name / "versions" / str(version) / "card.json"
    return hashlib.sha256(card.read_bytes()).hexdigest()


def in_force(app: Flask, key: str, name: str, version: int) -> dict[str, Any]:
    response = as_(app, key).get(notes_url(name, version))
    assert response.status_code == 200, response.get_json()
    found: dict[str, Any] = response.get_json()
    return found


def test_the_owner_amends_the_notes_and_the_card_keeps_its_own(
    make_app: Callable[..., Flask], training_env: Path
) -> None:
    artifacts = training_env / "artifacts"
    publish_version(artifacts, "chest-xray", 1, access=ModelAccess(owner="ci"), notes=PUBLISHED)
    sealed = card_sha256(artifacts, "chest-xray", 1)
    app = make_app()
    before = in_force(app, "radiology-bot", "chest-xray", 1)
    assert (before["source"], before["changed_by"], before["changed_at"]) == ("card", None, None)
    assert before["notes"] == {**PUBLISHED.model_dump(mode="json")}

    amended = as_(app, "ci-bot").put(notes_url("chest-xray", 1), json=FOUND_LATER)
    assert amended.status_code == 200, amended.get_json()
    body = amended.get_json()
    assert (body["source"], body["changed_by"], body["notes"]) == ("amended", "ci", FOUND_LATER)
    assert body["history"] == []
    seen = in_force(app, "radiology-bot", "chest-xray", 1)  # every key that may use it
    assert (seen["source"], seen["notes"], seen["changed_at"]) == (
        "amended",
        FOUND_LATER,
        body["changed_at"],
    )
    # the card is as published, to the byte; its notes are the first words
    assert card_sha256(artifacts, "chest-xray", 1) == sealed
    card = as_(app, "ci-bot").get("/v1/models/chest-xray/versions/1").get_json()["card"]
    assert card["notes"]["limitations"] == ["not tested on children"]
    stored = json.loads((artifacts / "models/chest-xray/notes/1.json").read_text())
    assert stored["notes"] == FOUND_LATER and stored["changed_by"] == "ci"

    # the whole notes replace those in force: what is left out is gone
    again = as_(app, "ci-bot").put(notes_url("chest-xray", 1), json={"limitations": ["x"]})
    assert again.get_json()["notes"] == {**NONE_SAID, "limitations": ["x"]}
    assert [(h["notes"], h["changed_by"]) for h in again.get_json()["history"]] == [
        (FOUND_LATER, "ci")
    ]
    changes = audit(app, action="notes_changed")
    assert [(r["client"], r["target"], r["outcome"]) for r in changes] == [
        ("ci", "model/chest-xray/versions/1/notes", "amended")
    ] * 2


def test_another_client_is_refused_on_the_record_and_an_admin_may(
    make_app: Callable[..., Flask], training_env: Path
) -> None:
    artifacts = training_env / "artifacts"
    publish_version(artifacts, "chest-xray", 1, access=ModelAccess(owner="ci"), notes=PUBLISHED)
    app = make_app()
    # another client with models:write may not amend them, even while it may use the version
    refused = as_(app, "radiology-lead").put(notes_url("chest-xray", 1), json=FOUND_LATER)
    assert refused.status_code == 403
    assert "belongs to client 'ci'" in refused.get_json()["detail"]
    without_scope = as_(app, "radiology-bot").put(notes_url("chest-xray", 1), json=FOUND_LATER)
    assert without_scope.status_code == 403  # no models:write
    assert in_force(app, "ci-bot", "chest-xray", 1)["source"] == "card"
    denied = [(r["client"], r["outcome"]) for r in audit(app, action="access_denied")
              if r["target"] == "model/chest-xray/versions/1/notes"]  # fmt: skip
    assert denied == [("radiology", "refused")]
    assert audit(app, action="notes_changed") == []

    by_admin = as_(app, "ops-models").put(notes_url("chest-xray", 1), json=FOUND_LATER)
    assert by_admin.status_code == 200, by_admin.get_json()
    assert (by_admin.get_json()["changed_by"], by_admin.get_json()["source"]) == ("ops", "amended")
    assert in_force(app, "ci-bot", "chest-xray", 1)["notes"] == FOUND_LATER


def test_a_version_with_no_owner_recorded_has_its_notes_amended_by_an_admin_only(
    make_app: Callable[..., Flask], training_env: Path
) -> None:
    """A card from before owners were recorded, and no job of this service made it."""
    publish_version(training_env / "artifacts", "legacy-xray", 1, notes=PUBLISHED)
    app = make_app()
    refused = as_(app, "ci-bot").put(notes_url("legacy-xray", 1), json=FOUND_LATER)
    assert refused.status_code == 403
    assert "no recorded owner" in refused.get_json()["detail"]
    assert in_force(app, "ci-bot", "legacy-xray", 1)["source"] == "card"
    by_admin = as_(app, "ops-models").put(notes_url("legacy-xray", 1), json=FOUND_LATER)
    assert by_admin.status_code == 200, by_admin.get_json()


def test_notes_say_where_they_come_from_and_a_private_versions_are_absent_to_others(
    make_app: Callable[..., Flask], training_env: Path
) -> None:
    artifacts = training_env / "artifacts"
    publish_version(artifacts, "chest-xray", 1)  # no notes, no owner: an older card
    private = ModelAccess(owner="radiology", private=True)
    publish_version(artifacts, "brain-ct", 1, access=private, notes=PUBLISHED)
    app = make_app()
    said = in_force(app, "ci-reader", "chest-xray", 1)
    assert (said["source"], said["notes"], said["history"]) == ("none", NONE_SAID, [])
    for response in (
        as_(app, "ci-reader").get(notes_url("chest-xray", 9)),
        as_(app, "ci-bot").put(notes_url("chest-xray", 9), json=FOUND_LATER),
        as_(app, "ci-bot").put(notes_url("no-such-model", 1), json=FOUND_LATER),
    ):
        assert response.status_code == 404, response.get_json()

    # another client's private version is not there: the 404 of a name nobody published
    for response in (
        as_(app, "ci-reader").get(notes_url("brain-ct", 1)),
        as_(app, "ci-bot").put(notes_url("brain-ct", 1), json=FOUND_LATER),
    ):
        assert response.status_code == 404
        assert response.get_json()["detail"] == "no model named 'brain-ct'"
    assert in_force(app, "radiology-lead", "brain-ct", 1)["source"] == "card"
    assert in_force(app, "ops", "brain-ct", 1)["notes"]["purpose"] == PUBLISHED.purpose


def test_unreadable_amended_notes_are_said_so_never_the_cards_in_their_place(
    make_app: Callable[..., Flask], training_env: Path
) -> None:
    artifacts = training_env / "artifacts"
    publish_version(artifacts, "chest-xray", 1, access=ModelAccess(owner="ci"), notes=PUBLISHED)
    (artifacts / "models/chest-xray/notes").mkdir(parents=True)
    (artifacts / "models/chest-xray/notes/1.json").write_text('{"notes": {"limitations": 3}}')
    app = make_app()
    broken = as_(app, "ci-reader").get(notes_url("chest-xray", 1))
    assert broken.status_code == 503
    assert "its amended notes are not valid" in broken.get_json()["detail"]
    replaced = as_(app, "ci-bot").put(notes_url("chest-xray", 1), json=FOUND_LATER)
    assert replaced.status_code == 200 and replaced.get_json()["history"] == []
    assert in_force(app, "ci-reader", "chest-xray", 1)["notes"] == FOUND_LATER


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"limitations": ["x" * 301]}, "body/limitations/0"),
        ({"limitations": [f"point {i}" for i in range(11)]}, "body/limitations"),
        ({"purpose": ""}, "body/purpose"),
        ({"purpose": "fine", "caveats": ["unknown"]}, "body/caveats"),
    ],
)
def test_bad_notes_are_a_422_naming_the_field_and_change_nothing(
    make_app: Callable[..., Flask], training_env: Path, body: dict[str, Any], loc: str
) -> None:
    artifacts = training_env / "artifacts"
    publish_version(artifacts, "chest-xray", 1, access=ModelAccess(owner="ci"), notes=PUBLISHED)
    app = make_app()
    problem = as_(app, "ci-bot").put(notes_url("chest-xray", 1), json=body)
    assert problem.status_code == 422, problem.get_json()
    assert problem.get_json()["errors"][0]["loc"] == loc, problem.get_json()
    assert in_force(app, "ci-bot", "chest-xray", 1)["source"] == "card"
    assert not (artifacts / "models/chest-xray/notes").exists()


def test_models_notes_shows_and_replaces_them_from_the_command_line(
    server: str, training_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    artifacts = training_env / "artifacts"
    publish_version(artifacts, "chest-xray", 1, access=ModelAccess(owner="team"), notes=PUBLISHED)
    publish_version(artifacts, "chest-xray", 2, access=ModelAccess(owner="radiology"))
    assert main(["models", "notes", "chest-xray", "1"]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown == [
        "chest-xray version 1: notes as published",
        f"  purpose: {PUBLISHED.purpose}",
        "  - not tested on children",
    ]
    argv = ["--limitation", "not tested on children", "--limitation", "misses small effusions"]
    assert main(["models", "notes", "chest-xray", "1", *argv, "--contact", "ai@x.example"]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[0] == "chest-xray version 1: notes as amended"
    assert shown[1].startswith("  amended by team at ")
    assert shown[2:] == [  # no --purpose: the purpose is gone
        "  - not tested on children",
        "  - misses small effusions",
        "  contact: ai@x.example",
    ]
    assert main(["models", "notes", "chest-xray", "1", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert (found["source"], found["notes"]["purpose"]) == ("amended", None)

    api = Client(server, KEYS["admin"].secret)
    assert api.notes("chest-xray", 2)["source"] == "none"
    assert main(["models", "notes", "chest-xray", "2", "--purpose", "ours now"]) == 5
    assert "belongs to client 'radiology'" in capsys.readouterr().err
    assert main(["models", "notes", "chest-xray", "1", "--limitation", "x" * 301]) == 5
    assert "limitations" in capsys.readouterr().err
    back = api.set_notes("chest-xray", 1, {"purpose": "a second read"})
    assert back["notes"] == {**NONE_SAID, "purpose": "a second read"}
    assert back["changed_by"] == "team"
    assert len(back["history"]) == 1
