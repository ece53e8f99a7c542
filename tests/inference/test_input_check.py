"""The per-scan input check in service: each answer says whether its scan looks like the
training scans (the card's input profile), counted per version; a scan unlike them is still
answered; a card without a profile answers as before."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from models import scans
from models.input_profile import Checker, colourfulness
from service.registry import Registry
from tests.inference.conftest import MODEL, Trained, _onnx_only
from tests.inference.test_models import metric

ATYPICAL = "scantune_inference_atypical_inputs_total"
IMAGES = "scantune_inference_images_total"
PLAIN = "chest-xray-plain"


def png(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray((image * 255).round().astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def uploads(fixture_images: Path) -> dict[str, bytes]:
    """A real scan, the same scan inverted (a MONOCHROME1 misread), a blank frame, noise."""
    scan = scans.read_file(fixture_images / "normal_0.png")
    noise = np.random.default_rng(0).random((256, 256))
    return {
        "scan.png": (fixture_images / "normal_0.png").read_bytes(),
        "inverted.png": png(1.0 - scan),
        "blank.png": png(np.zeros((300, 300))),
        "noise.png": png(noise),
    }


def post(client: Any, files: dict[str, bytes], model: str = MODEL) -> Any:
    data = {"file": [(io.BytesIO(body), name) for name, body in files.items()]}
    return client.post(f"/v1/models/{model}:predict", data=data)


def test_each_answer_says_whether_its_scan_is_like_the_training_scans(
    client: Any, check: Any, trained: Trained, fixture_images: Path
) -> None:
    profile = trained.v1_card.input_profile
    assert profile is not None  # the trainer wrote one
    files = uploads(fixture_images)
    before = metric(client, ATYPICAL, model=MODEL, version="1")
    response = check(post(client, files))
    assert response.status_code == 200  # flagged, never refused
    answers = {p["file"]: p for p in response.json["predictions"]}
    assert answers["scan.png"]["input_check"]["typical"] is True
    for name in ("inverted.png", "blank.png", "noise.png"):
        assert answers[name]["input_check"]["typical"] is False, answers[name]
        assert answers[name]["label"] in trained.v1_card.classes  # still answered
    for name, answer in answers.items():
        checked = answer["input_check"]
        assert checked["limit"] == profile.limit
        assert checked["typical"] == (checked["score"] <= profile.limit)
        image = scans.decode(files[name], name)
        expected = Checker(profile).score(scans.prepare(image, 32, 1), colourfulness(image))
        assert checked["score"] == round(expected, 4)
    assert metric(client, ATYPICAL, model=MODEL, version="1") == before + 3


def test_a_card_without_a_profile_answers_as_before(
    client: Any, registry: Registry, trained: Trained, fixture_images: Path
) -> None:
    plain = trained.v1_card.model_copy(update={"input_profile": None})
    registry.publish(PLAIN, 1, _onnx_only(trained.v1_dir), plain)
    registry.set_alias(PLAIN, "production", 1, actor="test")
    files = uploads(fixture_images)
    with_check = post(client, files).json["predictions"]
    without = post(client, files, PLAIN).json["predictions"]
    assert all("input_check" not in p for p in without)
    assert [p["probabilities"] for p in without] == [p["probabilities"] for p in with_check]
    assert metric(client, ATYPICAL, model=PLAIN, version="1") == 0
    v2 = client.post(f"/v2/models/{PLAIN}/infer", json=_bytes_request(files)).json
    assert set(v2["parameters"]) == {"sha256"}


def test_v2_answers_carry_the_check_in_their_parameters(
    client: Any, check: Any, trained: Trained, fixture_images: Path
) -> None:
    files = uploads(fixture_images)
    before = counts(client)
    by_files = check(client.post(f"/v2/models/{MODEL}/infer", json=_bytes_request(files)))
    assert by_files.status_code == 200, by_files.json
    parameters = by_files.json["parameters"]
    assert parameters["input_check_limit"] == trained.v1_card.input_profile.limit  # type: ignore[union-attr]
    assert parameters["input_check_atypical"] == 3
    v1 = post(client, files).json["predictions"]
    scores = [float(s) for s in parameters["input_check_scores"].split(",")]
    assert scores == [p["input_check"]["score"] for p in v1]

    spec = trained.v1_card.input
    batch = np.stack([scans.to_model_input(scans.decode(b, n), spec) for n, b in files.items()])
    tensor = {"name": "image", "shape": list(batch.shape), "datatype": "FP32",
              "data": batch.ravel().tolist()}  # fmt: skip
    by_tensor = check(client.post(f"/v2/models/{MODEL}/infer", json={"inputs": [tensor]})).json
    again = [float(s) for s in by_tensor["parameters"]["input_check_scores"].split(",")]
    np.testing.assert_allclose(again, scores, atol=2e-4)  # undone from the normalised tensor
    assert by_tensor["parameters"]["input_check_atypical"] == 3
    assert counts(client) == (before[0] + 9, before[1] + 12)  # v2 files, v1, v2 tensor


def counts(client: Any) -> tuple[float, float]:
    """The version's atypical scans and all its scans, as the metrics count them."""
    version = {"model": MODEL, "version": "1"}
    return metric(client, ATYPICAL, **version), metric(client, IMAGES, **version)


def _bytes_request(files: dict[str, bytes]) -> dict[str, Any]:
    encoded = [base64.b64encode(body).decode() for body in files.values()]
    return {"inputs": [{"name": "image", "shape": [len(encoded)], "datatype": "BYTES",
                        "data": encoded}]}  # fmt: skip
