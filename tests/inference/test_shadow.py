"""A version in shadow: after each answer of the serving version it classifies the same scans
in the background; the metrics count how often the two agree and what the shadow answers,
the client sees nothing of it; a busy service skips and counts; without the alias, or with
shadows off, nothing runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from service.inference import EXTENSION
from service.inference.shadow import Shadows
from service.registry import Registry
from tests.inference.conftest import MODEL, Trained, _onnx_only
from tests.inference.test_models import IMAGES, PREDICT, metric

SCANS = ("normal_0.png", "normal_1.png", "pneumonia_0.png", "pneumonia_1.png", "normal_0.jpg")


def scans() -> dict[str, Any]:
    return {"file": [(open(IMAGES / name, "rb"), name) for name in SCANS]}


def eager(registry: Registry, trained: Trained) -> None:
    """Version 2: version 1's graph with an operating point that calls almost every scan
    pneumonia, so the two disagree on the normal scans."""
    assert trained.v1_card.threshold is not None
    cut = trained.v1_card.threshold.model_copy(update={"value": 0.001})
    card = trained.v1_card.model_copy(update={"threshold": cut})
    registry.publish(MODEL, 2, _onnx_only(trained.v1_dir), card)


def shadows_of(client: Any) -> Shadows:
    found = client.application.extensions[EXTENSION].shadows
    assert found is not None
    return found


def counted(client: Any, agreed: str) -> float:
    return metric(
        client, "scantune_inference_shadow_scans_total",
        model=MODEL, version="1", shadow_version="2", agreed=agreed,
    )  # fmt: skip


@pytest.fixture
def shadowed(make_client: Any, registry: Registry, trained: Trained) -> Any:
    """A client of the service whose model has the eager version 2 in shadow."""
    eager(registry, trained)
    registry.set_alias(MODEL, "shadow", 2, actor="test")
    return make_client()


def test_the_shadow_version_classifies_what_the_serving_one_answered(shadowed: Any) -> None:
    client = shadowed
    shadows = shadows_of(client)
    assert client.post(PREDICT, data=scans()).status_code == 200  # reads the shadow alias
    shadows.drain()
    before = {a: counted(client, a) for a in ("true", "false")}
    mix = metric(client, "scantune_inference_predicted_total", model=MODEL, version="2",
                 label="pneumonia")  # fmt: skip
    answer = client.post(PREDICT, data=scans())
    assert answer.status_code == 200 and answer.json["model"]["version"] == 1
    assert "shadow" not in answer.get_data(as_text=True)  # the client sees none of it
    shadows.drain()
    ours = [p["label"] for p in answer.json["predictions"]]
    theirs = [p["label"] for p in client.post(f"{PREDICT}?version=2", data=scans()).json[
        "predictions"]]  # fmt: skip
    agreed = sum(a == b for a, b in zip(ours, theirs, strict=True))
    assert ours != theirs and set(theirs) == {"pneumonia"}  # the eager one differs
    assert counted(client, "true") - before["true"] == agreed
    assert counted(client, "false") - before["false"] == len(SCANS) - agreed
    # the shadow's classes count in its own version's mix (and then the explicit request's)
    shown = metric(client, "scantune_inference_predicted_total", model=MODEL, version="2",
                   label="pneumonia")  # fmt: skip
    assert shown - mix == 2 * theirs.count("pneumonia")


def test_a_busy_service_skips_the_shadow_and_counts_it(shadowed: Any) -> None:
    client = shadowed
    services = client.application.extensions[EXTENSION]
    full = Shadows(services.manager, services.predictor.withdrawals, pending=0)
    full._read(MODEL)
    assert full.version_of(MODEL) == 2
    skipped = metric(client, "scantune_inference_shadow_skipped_total", model=MODEL,
                     reason="busy")  # fmt: skip
    model = services.manager.get(MODEL, version=1)
    full.follow(model, [], [])
    assert metric(client, "scantune_inference_shadow_skipped_total", model=MODEL,
                  reason="busy") == skipped + 1  # fmt: skip
    full.stop()


def test_without_the_alias_or_with_shadows_off_nothing_runs(
    make_client: Any, registry: Registry, trained: Trained, tmp_path: Path
) -> None:
    eager(registry, trained)
    client = make_client()  # no shadow alias yet
    shadows = shadows_of(client)
    client.post(PREDICT, data=scans())
    shadows.drain()
    assert shadows.version_of(MODEL) is None
    registry.set_alias(MODEL, "shadow", 1, actor="test")  # the serving version itself
    off = make_client(shadow_alias="")
    assert shadows_of(off).version_of(MODEL) is None and shadows_of(off).alias == ""
    before = counted(off, "true") + counted(off, "false")
    assert off.post(PREDICT, data=scans()).status_code == 200
    shadows_of(off).drain()
    assert counted(off, "true") + counted(off, "false") == before
