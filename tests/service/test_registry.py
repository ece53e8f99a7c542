"""Publishing, reading and aliasing versions over a real store."""

from __future__ import annotations

import pytest

from service.errors import Conflict
from service.registry import (
    AliasNotFound,
    ArtifactCorrupt,
    ModelNotFound,
    Registry,
    VersionNotFound,
)
from tests.service.conftest import make_run_dir


def test_publish_writes_everything_but_checkpoints_and_card_last(store, tmp_path):
    run, card = make_run_dir(tmp_path / "run")
    registry = Registry(store)
    published = registry.publish("chest", 1, run, card)
    assert published.version == 1 and published.name == "chest"
    keys = store.list_keys("models/chest/versions/1")
    assert "models/chest/versions/1/plots/roc.png" in keys
    assert not any("checkpoints" in k for k in keys)
    assert registry.get_card("chest", 1) == published
    assert registry.list_models() == ["chest"]
    loaded = registry.load("chest", 1)
    assert loaded.onnx == (run / "model.onnx").read_bytes()
    uris = registry.artifact_uris("chest", 1)
    assert uris["model.onnx"].startswith(store.uri) and "plots/roc.png" in uris


def test_a_version_without_its_card_is_invisible(store, tmp_path):
    run, card = make_run_dir(tmp_path / "run")
    store.put_file("models/chest/versions/2/model.onnx", run / "model.onnx")  # a crashed publish
    registry = Registry(store)
    assert registry.list_versions("chest") == []
    registry.publish("chest", 1, run, card)
    assert registry.list_versions("chest") == [1]
    with pytest.raises(VersionNotFound):
        registry.get_card("chest", 2)
    with pytest.raises(ModelNotFound):
        registry.get_card("lung", 1)


def test_republishing_a_version_conflicts(store, tmp_path):
    run, card = make_run_dir(tmp_path / "run")
    registry = Registry(store)
    registry.publish("chest", 1, run, card)
    with pytest.raises(Conflict):
        registry.publish("chest", 1, run, card)


def test_tampered_onnx_is_refused(store, tmp_path):
    run, card = make_run_dir(tmp_path / "run")
    registry = Registry(store)
    registry.publish("chest", 1, run, card)
    store.put_bytes("models/chest/versions/1/model.onnx", b"tampered")
    with pytest.raises(ArtifactCorrupt, match="does not match"):
        registry.load("chest", 1)
    (run / "model.onnx").write_bytes(b"changed after the card was written")
    with pytest.raises(ArtifactCorrupt):
        registry.publish("chest", 2, run, card)
    assert registry.list_versions("chest") == [1]


def test_aliases_record_who_when_and_history(store, tmp_path):
    registry = Registry(store)
    for version in (1, 2):
        run, card = make_run_dir(tmp_path / f"run{version}", onnx=f"model {version}".encode())
        registry.publish("chest", version, run, card)
    with pytest.raises(AliasNotFound):
        registry.get_alias("chest", "production")
    registry.set_alias("chest", "production", 1, actor="ci")
    record = registry.set_alias("chest", "production", 2, actor="alice")
    assert (record.version, record.set_by) == (2, "alice")
    assert [h["version"] for h in record.history] == [1]
    assert registry.resolve("chest", alias="production") == 2
    assert registry.resolve("chest", version=1) == 1
    assert set(registry.aliases("chest")) == {"production"}
    with pytest.raises(VersionNotFound):
        registry.set_alias("chest", "staging", 9, actor="ci")
    with pytest.raises(ValueError):
        registry.set_alias("chest", "Bad Alias", 1, actor="ci")


@pytest.mark.parametrize("name", ["a\x00b", "..", "chest/../chest", "Chest", "chest\n", ""])
def test_a_name_no_model_can_have_is_not_found_and_never_a_store_key(store, tmp_path, name):
    run, card = make_run_dir(tmp_path / "run")
    registry = Registry(store)
    registry.publish("chest", 1, run, card)
    registry.set_alias("chest", "production", 1, actor="test")
    assert registry.list_versions(name) == []
    for read in (
        lambda: registry.get_card(name, 1),
        lambda: registry.get_alias(name, "production"),
        lambda: registry.aliases(name),
        lambda: registry.load(name, 1),
        lambda: registry.set_alias(name, "production", 1, actor="test"),
    ):
        with pytest.raises(ModelNotFound):
            read()
    assert registry.list_models() == ["chest"]


def test_listing_versions_is_one_store_listing_however_many_versions(store, tmp_path):
    run, card = make_run_dir(tmp_path / "run")
    registry = Registry(store)
    for version in (1, 2, 3, 10):
        registry.publish("chest", version, run, card)
    store.put_bytes("models/chest/versions/4/model.onnx", b"half-published: no card yet")
    calls: list[str] = []

    class Counting:
        def __getattr__(self, name: str):
            calls.append(name)
            return getattr(store, name)

    assert Registry(Counting()).list_versions("chest") == [1, 2, 3, 10]  # type: ignore[arg-type]
    assert calls == ["list_keys"]


@pytest.mark.parametrize("record", [b'{"version": "x"', b'{"version": 1}', b"[]"])
def test_an_unreadable_alias_record_is_corrupt_left_out_of_listings_and_replaceable(
    store, tmp_path, record
):
    run, card = make_run_dir(tmp_path / "run")
    registry = Registry(store)
    registry.publish("chest", 1, run, card)
    registry.set_alias("chest", "production", 1, actor="ci")
    registry.set_alias("chest", "staging", 1, actor="ci")
    store.put_bytes("models/chest/aliases/staging.json", record)
    with pytest.raises(ArtifactCorrupt, match="alias 'staging': its record is not valid"):
        registry.get_alias("chest", "staging")
    assert list(registry.aliases("chest")) == ["production"]
    repaired = registry.set_alias("chest", "staging", 1, actor="ops")
    assert (repaired.version, repaired.set_by, repaired.history) == (1, "ops", [])
    assert registry.get_alias("chest", "staging") == repaired


def test_who_may_use_a_version_changes_outside_its_files_and_an_unreadable_word_hides_it(
    store, tmp_path
):
    from models.card import ModelAccess
    from service.model_access import seen_by

    run, card = make_run_dir(tmp_path / "run")
    registry = Registry(store, access_recheck_s=0)
    registry.publish("chest", 1, run, card.model_copy(update={"access": ModelAccess(owner="rad")}))
    assert seen_by(registry, "ci").list_versions("chest") == [1]
    first = registry.set_access("chest", 1, private=True, clients=["gw"], owner="x", actor="rad")
    assert (first.owner, first.clients, first.history) == ("rad", ["gw"], [])  # the card's owner
    assert "access.json" not in registry.artifact_uris("chest", 1)  # not one of its files
    assert registry.get_card("chest", 1).access == ModelAccess(owner="rad")  # as published
    assert seen_by(registry, "ci").list_versions("chest") == []
    assert seen_by(registry, "gw").list_versions("chest") == [1]

    store.put_bytes("models/chest/access/1.json", b'{"private": "maybe"')
    assert registry.access_of("chest", 1) == ModelAccess(owner="rad", private=True)
    assert seen_by(registry, "gw").list_versions("chest") == []  # it may have been a revocation
    assert seen_by(registry, "rad").list_versions("chest") == [1]
    again = registry.set_access("chest", 1, private=False, clients=[], owner="x", actor="admin")
    assert again.history == []  # the unreadable word is replaced, its history lost
    assert seen_by(registry, "gw").list_versions("chest") == [1]


def test_an_unreadable_withdrawal_counts_as_withdrawn_until_set_again(store, tmp_path):
    from service.withdrawals import VersionWithdrawn, Withdrawals

    run, card = make_run_dir(tmp_path / "run")
    Registry(store).publish("chest", 1, run, card)
    withdrawals = Withdrawals(store, recheck_s=0)
    withdrawals.require_in_service("chest", 1)  # never withdrawn
    store.put_bytes("models/chest/withdrawn/1.json", b'{"withdrawn": tr')
    with pytest.raises(VersionWithdrawn, match="its withdrawal record is unreadable"):
        withdrawals.require_in_service("chest", 1)
    back = withdrawals.set("chest", 1, withdrawn=False, reason="mended", actor="admin")
    assert back.history == []  # the unreadable word is replaced
    withdrawals.require_in_service("chest", 1)
    assert "withdrawn" not in "".join(Registry(store).artifact_uris("chest", 1))
