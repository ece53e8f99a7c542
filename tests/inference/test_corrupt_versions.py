"""A corrupt version is fetched once, not again on every alias poll; a repair or a re-publish
is picked up, and the previous version serves meanwhile."""

from __future__ import annotations

import io
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from models.card import ONNX_FILE
from service.config import InferenceSettings
from service.inference.manager import ModelManager
from service.registry import ArtifactCorrupt, Registry
from tests.inference.conftest import MODEL, Trained, publish
from tests.inference.test_models import tamper

INTERVAL = 5.0
V2_ONNX = f"models/{MODEL}/versions/2/{ONNX_FILE}"
PNG = Path(__file__).resolve().parents[1] / "data" / "images" / "normal_0.png"


class Clock:
    """The manager's monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fetches(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Keys of every ONNX file read from the store."""
    fetched: list[str] = []
    read = registry.store.get_bytes

    def counting(key: str) -> bytes:
        if key.endswith(f"/{ONNX_FILE}"):
            fetched.append(key)
        return read(key)

    monkeypatch.setattr(registry.store, "get_bytes", counting)
    return fetched


@pytest.fixture
def manager(
    registry: Registry, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ModelManager]:
    """Serving version 1 through `production`; polled by the test, not by a thread."""
    monkeypatch.setenv("SCANTUNE_ARTIFACT_URI", registry.store.uri)
    monkeypatch.setenv("SCANTUNE_ALIAS_POLL_INTERVAL_S", str(INTERVAL))
    monkeypatch.setenv("SCANTUNE_BATCH_RUNNERS", "1")
    manager = ModelManager(registry, InferenceSettings(), clock=clock)
    assert manager.get(MODEL).version == 1
    yield manager
    manager.stop()


def promote_corrupt_v2(registry: Registry, trained: Trained) -> None:
    publish(registry, trained, 2)
    tamper(registry, 2)
    registry.set_alias(MODEL, "production", 2, actor="test")


def poll(manager: ModelManager, clock: Clock, times: int) -> None:
    for _ in range(times):
        manager.poll_once()
        clock.now += INTERVAL


def test_a_corrupt_target_is_not_fetched_on_every_poll_and_a_repair_is_picked_up(
    manager: ModelManager, registry: Registry, trained: Trained, clock: Clock, fetches: list[str]
) -> None:
    promote_corrupt_v2(registry, trained)
    poll(manager, clock, 12)  # a minute of polls
    assert fetches.count(V2_ONNX) == 3  # at 0, 10 and 30 s: the retry delay doubles
    assert manager.resolve_alias(MODEL, "production") == 1
    with pytest.raises(ArtifactCorrupt):
        manager.get(MODEL, version=2)  # a request for it fails fast too
    assert fetches.count(V2_ONNX) == 3

    registry.store.put_file(V2_ONNX, trained.v2_dir / ONNX_FILE)  # repaired, same card
    poll(manager, clock, 4)  # the next retry is due at 70 s
    assert fetches.count(V2_ONNX) == 4
    assert manager.resolve_alias(MODEL, "production") == 2
    assert manager.get(MODEL).sha256 == trained.v2_card.onnx_sha256


def test_a_republished_version_is_tried_at_the_next_poll(
    manager: ModelManager,
    registry: Registry,
    trained: Trained,
    clock: Clock,
    fetches: list[str],
    tmp_path: Path,
) -> None:
    promote_corrupt_v2(registry, trained)
    poll(manager, clock, 1)
    assert fetches.count(V2_ONNX) == 1

    registry.store.delete_prefix(registry.version_prefix(MODEL, 2))  # re-published: new card
    (tmp_path / "export").mkdir()
    shutil.copy(trained.v1_dir / ONNX_FILE, tmp_path / "export" / ONNX_FILE)
    registry.publish(MODEL, 2, tmp_path / "export", trained.v1_card)
    poll(manager, clock, 1)  # before the backoff's 10 s
    assert fetches.count(V2_ONNX) == 2
    assert manager.resolve_alias(MODEL, "production") == 2
    assert manager.get(MODEL).sha256 == trained.v1_card.onnx_sha256


def test_a_refused_target_warns_once_not_every_poll(
    manager: ModelManager,
    registry: Registry,
    trained: Trained,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    promote_corrupt_v2(registry, trained)
    with caplog.at_level(logging.DEBUG, logger="scantune.inference.models"):
        poll(manager, clock, 12)
    stale = [r for r in caplog.records if "not refreshed" in r.getMessage()]
    assert [r.levelno for r in stale].count(logging.WARNING) == 1
    assert len(stale) >= 2  # the repeats are still there, at debug level
    assert manager.get(MODEL).version == 1


def test_a_card_that_does_not_parse_is_the_stores_fault_not_the_requests(
    make_client: Any, check: Any, registry: Registry, trained: Trained
) -> None:
    """A broken card.json answered 422 'body/name: Field required' to requests with no body."""
    publish(registry, trained, 2)
    registry.store.put_bytes(f"{registry.version_prefix(MODEL, 2)}/card.json", b'{"not": 1}')
    client = make_client()
    for method, url in [
        ("POST", f"/v1/models/{MODEL}:predict?version=2"),
        ("GET", f"/v1/models/{MODEL}?version=2"),
        ("GET", f"/v2/models/{MODEL}/versions/2"),
    ]:
        data = {"file": (io.BytesIO(PNG.read_bytes()), "a.png")} if method == "POST" else None
        response = check(client.open(url, method=method, data=data))
        assert response.status_code == 503, (url, response.json)
        assert response.json["title"] == "Model artifact corrupt"
        assert "version 2: its card.json is not a valid model card" in response.json["detail"]
    ready = check(client.get(f"/v2/models/{MODEL}/versions/2/ready"))
    assert (ready.status_code, ready.json) == (503, {"name": MODEL, "ready": False})
    scan = {"file": (io.BytesIO(PNG.read_bytes()), "a.png")}
    served = check(client.post(f"/v1/models/{MODEL}:predict", data=scan))
    assert served.status_code == 200 and served.json["model"]["version"] == 1
