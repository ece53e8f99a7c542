"""Both artifact stores behave the same through the one interface."""

from __future__ import annotations

import pytest

from service.storage import ObjectNotFound, StoreError, open_store


def test_round_trip_and_listing(store, tmp_path):
    store.put_bytes("models/a/versions/1/card.json", b"{}")
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * 40_000)  # 10 MB: multipart on S3
    store.put_file("models/a/versions/1/model.onnx", big)
    store.put_bytes("models/b/aliases/production.json", b"1")
    assert store.get_bytes("models/a/versions/1/model.onnx") == big.read_bytes()
    assert store.exists("models/a/versions/1/card.json")
    assert not store.exists("models/a/versions/2/card.json")
    assert store.list_children("models") == ["a", "b"]
    assert store.list_children("models/a/versions/1") == ["card.json", "model.onnx"]
    assert store.list_keys("models/a") == [
        "models/a/versions/1/card.json",
        "models/a/versions/1/model.onnx",
    ]
    assert store.url("models/a").endswith("/models/a")
    store.check()


def test_missing_object_and_overwrite(store):
    with pytest.raises(ObjectNotFound):
        store.get_bytes("nope")
    store.put_bytes("k", b"one")
    store.put_bytes("k", b"two")
    assert store.get_text("k") == "two"
    assert store.list_children("absent/prefix") == []


def test_delete_prefix(store):
    for key in ("x/1", "x/y/2", "xz/3"):
        store.put_bytes(key, b".")
    store.delete_prefix("x")
    assert store.list_keys("x") == []
    assert store.exists("xz/3")


def test_local_keys_cannot_escape_the_root(tmp_path):
    store = open_store((tmp_path / "root").as_uri())
    with pytest.raises(StoreError):
        store.put_bytes("../outside", b"x")
    assert not (tmp_path / "outside").exists()


def test_unknown_scheme_and_unreachable_bucket(moto_server):
    with pytest.raises(StoreError, match="unsupported"):
        open_store("ftp://host/x")
    with pytest.raises(StoreError, match="not reachable"):
        open_store("s3://no-such-bucket-here", endpoint_url=moto_server).check()
