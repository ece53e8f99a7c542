"""/v1 predict and model listing, through the app factory, against the real trained model."""

from __future__ import annotations

import base64
import gzip
import io
import json
import weakref
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from models import scans
from tests.inference.conftest import MODEL, Trained

PREDICT = f"/v1/models/{MODEL}:predict"
PARITY_FILES = [
    "normal_0.png",
    "pneumonia_0.png",
    "normal_1_16.png",
    "pneumonia_1.jpg",
    "normal_0_rescale.dcm",
    "pneumonia_1_rescale.dcm",
    "normal_1_mono1.dcm",
    "pneumonia_0_mono1.dcm",
    "normal_1_jpeg_lossless.dcm",
    "pneumonia_1_jpeg_ls.dcm",
    "normal_0_signed_jpeg_lossless.dcm",
    "big_pneumonia_0.png",
]


def torch_probabilities(trained: Trained, paths: list[Path]) -> np.ndarray:
    """The trainer's pipeline: scans.to_model_input, the eval-mode network, the temperature."""
    card = trained.v1_card
    batch = np.stack([scans.to_model_input(scans.read_file(p), card.input) for p in paths])
    with torch.no_grad():
        logits = trained.torch_model(torch.from_numpy(batch))
        probs = torch.softmax(logits / card.calibration.temperature, dim=1)
    return probs.numpy()


def multipart(paths: list[Path]) -> dict[str, Any]:
    return {"file": [(io.BytesIO(p.read_bytes()), p.name) for p in paths]}


def test_probabilities_match_the_trainers_pytorch_pipeline(
    client: Any, check: Any, trained: Trained, fixture_images: Path
) -> None:
    paths = [fixture_images / name for name in PARITY_FILES]
    response = check(client.post(PREDICT, data=multipart(paths)))
    assert response.status_code == 200, response.json
    body = response.json
    expected = torch_probabilities(trained, paths)
    classes = trained.v1_card.classes
    got = np.array([[p["probabilities"][c] for c in classes] for p in body["predictions"]])
    assert [p["file"] for p in body["predictions"]] == PARITY_FILES
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    assert body["model"] == {
        "name": MODEL,
        "version": 1,
        "sha256": trained.v1_card.onnx_sha256,
        "alias": "production",
    }
    assert body["request_id"] == response.headers["X-Request-Id"]


def test_single_requests_match_the_batch(client: Any, fixture_images: Path) -> None:
    """One scan per request (micro-batched or alone) gives the probabilities of a full batch."""
    paths = [fixture_images / name for name in PARITY_FILES[:4]]
    together = client.post(PREDICT, data=multipart(paths)).json["predictions"]
    for path, expected in zip(paths, together, strict=True):
        alone = client.post(PREDICT, data=multipart([path])).json["predictions"][0]
        for c, p in expected["probabilities"].items():
            assert alone["probabilities"][c] == pytest.approx(p, abs=1e-6)


def test_label_uses_the_cards_threshold(
    client: Any, trained: Trained, fixture_images: Path
) -> None:
    threshold = trained.v1_card.threshold
    assert threshold is not None
    paths = [p for p in sorted(fixture_images.glob("*.png")) if p.stem != "truncated"]
    for pred in client.post(PREDICT, data=multipart(paths)).json["predictions"]:
        positive = pred["probabilities"][threshold.positive_class] >= threshold.value
        assert (pred["label"] == threshold.positive_class) == positive
        assert pred["top_k"][0]["probability"] == max(pred["probabilities"].values())


def test_json_base64_and_raw_body_give_the_same_answer(
    client: Any, check: Any, fixture_images: Path
) -> None:
    data = (fixture_images / "pneumonia_0_rescale.dcm").read_bytes()
    encoded = base64.b64encode(data).decode()
    by_json = check(
        client.post(PREDICT, json={"instances": [{"b64": encoded, "name": "scan.dcm"}]})
    )
    raw = check(client.post(PREDICT, data=data, content_type="application/dicom"))
    form = client.post(PREDICT, data=multipart([fixture_images / "pneumonia_0_rescale.dcm"]))
    assert by_json.json["predictions"][0]["file"] == "scan.dcm"
    assert raw.json["predictions"][0]["file"] == "body"
    probs = [r.json["predictions"][0]["probabilities"] for r in (by_json, raw, form)]
    assert probs[0] == probs[1] == probs[2]


def test_a_bare_dicom_data_set_is_classified_like_its_part10_file(
    client: Any, check: Any, fixture_images: Path
) -> None:
    from tests.data.make_fixtures import raw_dataset

    part10 = (fixture_images / "pneumonia_0_rescale.dcm").read_bytes()
    raw = raw_dataset(part10, implicit_vr=True)
    answers = [
        check(client.post(PREDICT, data=body, content_type="application/dicom"))
        for body in (part10, raw)
    ]
    first, second = (a.json["predictions"][0]["probabilities"] for a in answers)
    assert first == second


def test_a_compressed_body_is_read_like_the_plain_one(
    client: Any, check: Any, fixture_images: Path
) -> None:
    """Content-Encoding gzip or deflate, raw or multipart (a DICOM shrinks by half or more)."""
    data = (fixture_images / "pneumonia_0_rescale.dcm").read_bytes()
    form = (
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="s.dcm"\r\n'
        b"Content-Type: application/dicom\r\n\r\n" + data + b"\r\n--B--\r\n"
    )
    requests = [
        (data, "application/dicom", None),
        (gzip.compress(data), "application/dicom", "gzip"),
        (zlib.compress(data), "application/dicom", "deflate"),
        (gzip.compress(form), "multipart/form-data; boundary=B", "gzip"),
    ]
    answers = []
    for body, content_type, encoding in requests:
        headers = {"Content-Encoding": encoding} if encoding else {}
        response = check(
            client.post(PREDICT, data=body, content_type=content_type, headers=headers)
        )
        assert response.status_code == 200, (encoding, response.json)
        answers.append(response.json["predictions"][0]["probabilities"])
    assert all(a == answers[0] for a in answers)


def test_base64_from_a_browser_or_the_base64_tool_is_read_like_plain_base64(
    client: Any, check: Any, fixture_images: Path
) -> None:
    """A data: URI (FileReader.readAsDataURL) and line-wrapped base64 (`base64 scan.png`) were
    400 'not valid base64'."""
    data = (fixture_images / "normal_0.png").read_bytes()
    plain = base64.b64encode(data).decode()
    wrapped = base64.encodebytes(data).decode()  # 76-character lines, as the tool writes
    assert "\n" in wrapped.strip()
    texts = [plain, f"data:image/png;base64,{plain}", wrapped.replace("\n", "\r\n"), wrapped]
    answers = [
        check(client.post(PREDICT, json={"instances": [{"b64": text}]})).json["predictions"][0]
        for text in texts
    ]
    assert all(a["probabilities"] == answers[0]["probabilities"] for a in answers)


def test_explain_returns_a_heatmap_at_the_scans_size(
    client: Any, check: Any, fixture_images: Path
) -> None:
    paths = [fixture_images / "big_normal_0.png", fixture_images / "normal_0_rescale.dcm"]
    response = check(client.post(f"{PREDICT}?explain=true&top_k=1", data=multipart(paths)))
    assert response.status_code == 200
    for path, pred in zip(paths, response.json["predictions"], strict=True):
        size = scans.read_file(path).shape[:2]
        explanation = pred["explanation"]
        assert explanation["class"] == pred["label"]
        assert (explanation["height"], explanation["width"]) == size
        heatmap = Image.open(io.BytesIO(base64.b64decode(explanation["png_base64"])))
        assert heatmap.format == "PNG" and heatmap.size == (size[1], size[0])
        assert len(pred["top_k"]) == 1


def test_explicit_version_and_alias(
    client: Any, check: Any, registry: Any, trained: Trained, fixture_images: Path
) -> None:
    from tests.inference.conftest import publish

    publish(registry, trained, 2)
    registry.set_alias(MODEL, "staging", 2, actor="test")
    scan = multipart([fixture_images / "normal_0.png"])
    by_version = check(client.post(f"{PREDICT}?version=2", data=scan)).json
    scan = multipart([fixture_images / "normal_0.png"])
    by_alias = check(client.post(f"{PREDICT}?alias=staging", data=scan)).json
    assert by_version["model"] == {
        "name": MODEL,
        "version": 2,
        "sha256": trained.v2_card.onnx_sha256,
    }
    assert by_alias["model"]["alias"] == "staging" and by_alias["model"]["version"] == 2
    assert by_version["predictions"] == by_alias["predictions"]


def test_list_and_describe_models(
    client: Any, check: Any, fixture_images: Path, trained: Trained
) -> None:
    client.post(PREDICT, data=multipart([fixture_images / "normal_0.png"]))
    listing = check(client.get("/v1/models")).json
    assert [m["name"] for m in listing["models"]] == [MODEL]
    entry = listing["models"][0]
    assert entry["versions"] == [1] and entry["aliases"] == {"production": 1}
    assert entry["loaded"][0]["version"] == 1 and entry["loaded"][0]["aliases"] == ["production"]
    described = check(client.get(f"/v1/models/{MODEL}")).json
    assert described["serving"]["version"] == 1 and described["serving"]["alias"] == "production"
    card = described["serving"]["card"]
    assert card["classes"] == ["normal", "pneumonia"] and card["input"]["size"] == 32
    assert json.dumps(card)  # serialisable as sent


def test_health_ready_and_metrics(client: Any, check: Any, fixture_images: Path) -> None:
    check(client.get("/healthz"))
    assert check(client.get("/readyz")).status_code == 200
    client.post(PREDICT, data=multipart([fixture_images / "normal_0.png"]))
    text = check(client.get("/metrics")).get_data(as_text=True)
    assert f'scantune_inference_requests_total{{model="{MODEL}",status="200",version="1"}}' in text
    assert "scantune_inference_batch_size_bucket" in text
    assert "scantune_model_load_seconds_count" in text
    assert "scantune_models_loaded" in text


def test_a_colour_dicom_of_a_gray_scan_gets_the_gray_scans_answer(
    client: Any, check: Any, fixture_images: Path
) -> None:
    from tests.data.make_fixtures import colour_dicom_bytes

    gray = np.asarray(Image.open(fixture_images / "normal_0.png"))
    rgb_dicom = colour_dicom_bytes(np.stack([gray] * 3, axis=-1), syntax="1.2.840.10008.1.2.5")
    response = check(
        client.post(
            PREDICT,
            data={
                "file": [
                    (io.BytesIO(rgb_dicom), "colour.dcm"),
                    (io.BytesIO((fixture_images / "normal_0.png").read_bytes()), "gray.png"),
                ]
            },
        )
    )
    assert response.status_code == 200, response.json
    colour, plain = response.json["predictions"]
    for c, p in plain["probabilities"].items():
        assert colour["probabilities"][c] == pytest.approx(p, abs=1e-6)


def test_a_request_holds_one_decoded_scan_at_a_time(
    client: Any, fixture_images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many large scans in one request must not all be decoded at once (64 files of 60 kB
    that decode to 64 MP each would hold 16 GB)."""
    decoded: list[weakref.ref[np.ndarray]] = []
    alive_at_each_decode: list[int] = []
    original = scans.decode

    def tracking_decode(
        data: bytes, name: str = "<upload>", budget: int | None = None
    ) -> np.ndarray:
        alive_at_each_decode.append(sum(ref() is not None for ref in decoded))
        image = original(data, name, budget)
        decoded.append(weakref.ref(image))
        return image

    monkeypatch.setattr(scans, "decode", tracking_decode)
    paths = [fixture_images / "big_normal_0.png", fixture_images / "big_pneumonia_1.png"] * 3
    response = client.post(PREDICT, data=multipart(paths))
    assert response.status_code == 200 and len(response.json["predictions"]) == 6
    assert alive_at_each_decode == [0] * 6


def test_the_heatmap_is_hot_where_the_cam_is_and_cold_where_it_is_not() -> None:
    from service.inference.explain import heatmap_png

    cam = np.zeros((7, 7), dtype=np.float32)
    cam[0, 0] = 5.0  # hot top-left cell
    png = Image.open(io.BytesIO(base64.b64decode(heatmap_png(cam, 700, 350))))
    assert png.format == "PNG" and png.size == (350, 700)
    rgb = np.asarray(png.convert("RGB"))
    assert tuple(rgb[0, 0]) == (128, 0, 0)  # the ramp's top: dark red
    assert tuple(rgb[-1, -1]) == (0, 0, 128)  # its bottom: dark blue
    assert tuple(rgb[400, 200]) == (0, 0, 128)  # far from the hot cell


def test_with_a_signing_key_each_prediction_is_signed_as_this_version_answered_it(
    client: Any, make_client: Any, fixture_images: Path
) -> None:
    from service.signing import verify

    paths = [fixture_images / "normal_0.png", fixture_images / "pneumonia_0_rescale.dcm"]
    assert all("signature" not in p for p in client.post(PREDICT, data=multipart(paths)).json[
        "predictions"])  # fmt: skip
    key = "a-signing-key-both-services-hold"
    answer = make_client(prediction_signing_key=key).post(PREDICT, data=multipart(paths)).json
    version = answer["model"]["version"]
    for prediction in answer["predictions"]:
        signature = prediction["signature"]
        assert verify(key, MODEL, version, prediction["probabilities"], signature)
        assert not verify(key, MODEL, version + 1, prediction["probabilities"], signature)
