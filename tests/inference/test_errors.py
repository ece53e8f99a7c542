"""Every error the inference API promises, table-driven, each checked against the spec."""

from __future__ import annotations

import base64
import gzip
import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from service.auth import hash_key
from service.registry import Registry
from tests.data.make_fixtures import png_declaring, with_elements
from tests.inference.conftest import MODEL

PREDICT = f"/v1/models/{MODEL}:predict"
IMAGES = Path(__file__).resolve().parents[1] / "data" / "images"


def part(name: str, content_type: str | None = None) -> tuple[Any, ...]:
    data = io.BytesIO((IMAGES / name).read_bytes())
    return (data, name, content_type) if content_type else (data, name)


def b64(name: str) -> str:
    return base64.b64encode((IMAGES / name).read_bytes()).decode()


def fp32_header(size: int) -> dict[str, Any]:
    """A binary FP32 input of the test model's one-image shape, `size` bytes declared."""
    return {"name": "image", "shape": [1, 1, 32, 32], "datatype": "FP32",
            "parameters": {"binary_data_size": size}}  # fmt: skip


def binary(header: dict[str, Any], tail: bytes, *, length: str | None = None) -> dict[str, Any]:
    """Request arguments for a body in the binary tensor data extension, as tritonclient
    sends it (no Content-Type)."""
    head = json.dumps(header).encode()
    return {"data": head + tail,
            "headers": {"Inference-Header-Content-Length": length or str(len(head))}}  # fmt: skip


def dicom_with(**elements: object) -> bytes:
    """A real fixture scan with elements set as a broken modality might write them."""
    return with_elements((IMAGES / "normal_0_rescale.dcm").read_bytes(), **elements)


# (case id, url, request kwargs, status, text the detail must contain)
CASES: list[tuple[str, str, dict[str, Any], int, str]] = [
    ("text body", PREDICT, {"data": "hello", "content_type": "text/plain"}, 415, "text/plain"),
    ("no content type", PREDICT, {"data": b"x", "content_type": ""}, 415, "no content type"),
    ("text part", PREDICT, {"data": {"file": part("not_an_image.txt", "text/plain")}}, 415,
     "not_an_image.txt"),
    ("not an image", PREDICT,
     {"data": {"file": part("not_an_image.txt", "application/octet-stream")}}, 422,
     "not_an_image.txt: not a PNG, JPEG or DICOM"),
    ("truncated png", PREDICT, {"data": {"file": [part("normal_0.png"), part("truncated.png")]}},
     422, "truncated.png"),
    ("dicom without pixels", PREDICT, {"data": {"file": part("no_pixels.dcm")}}, 422,
     "no_pixels.dcm: DICOM file has no pixel data"),
    ("jpeg-ls dicom that crashes gdcm", PREDICT,
     {"data": {"file": part("normal_0_jpeg_ls_gdcm_crash.dcm")}}, 422,
     "normal_0_jpeg_ls_gdcm_crash.dcm: cannot decode DICOM pixel data (the decoder process was"
     " killed by SIGABRT)"),
    ("png declaring 10^10 pixels", PREDICT,
     {"data": {"file": (io.BytesIO(png_declaring(100_000, 100_000)), "bomb.png")}}, 422,
     "bomb.png: image of over"),
    ("dicom with an infinite rescale", PREDICT,
     {"data": {"file": (io.BytesIO(dicom_with(RescaleSlope="inf")), "scan.dcm")}}, 422,
     "scan.dcm: DICOM RescaleSlope is not a finite number"),
    ("dicom with a corrupt header", PREDICT,
     {"data": {"file": (io.BytesIO(dicom_with(WindowCenter=b"12\xc4.0C")), "scan.dcm")}}, 422,
     "scan.dcm: DICOM WindowCenter is not a number"),
    ("v2 dicom with a two-valued rescale", f"/v2/models/{MODEL}/infer",
     {"json": {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                           "data": [base64.b64encode(dicom_with(RescaleIntercept=["1", "2"]))
                                    .decode()]}]}}, 422, "RescaleIntercept has 2 values"),
    ("json instance undecodable", PREDICT,
     {"json": {"instances": [{"b64": b64("not_an_image.txt"), "name": "notes.txt"}]}}, 422,
     "notes.txt"),
    ("unknown model", "/v1/models/nope:predict", {"data": {"file": part("normal_0.png")}}, 404,
     "nope"),
    ("model name with a NUL byte", "/v1/models/a%00b:predict",
     {"data": {"file": part("normal_0.png")}}, 404, "no model named 'a\\x00b'"),
    ("v2 model name with a NUL byte", "/v2/models/a%00b/ready", {"method": "GET"}, 404,
     "no model named"),
    ("unknown version", f"{PREDICT}?version=9", {"data": {"file": part("normal_0.png")}}, 404,
     "version 9"),
    ("unknown alias", f"{PREDICT}?alias=canary", {"data": {"file": part("normal_0.png")}}, 404,
     "canary"),
    ("multipart without file", PREDICT, {"data": {"scan": part("normal_0.png")}}, 400, "'file'"),
    ("malformed json", PREDICT, {"data": "{nope", "content_type": "application/json"}, 400,
     "instances"),
    ("json without instances", PREDICT, {"json": {"images": []}}, 400, "instances"),
    ("empty instances", PREDICT, {"json": {"instances": []}}, 400, "no scan"),
    ("bad base64", PREDICT, {"json": {"instances": [{"b64": "%%%"}]}}, 400, "base64"),
    ("bad base64 in a data URI", PREDICT,
     {"json": {"instances": [{"b64": "data:image/png;base64,%%%"}]}}, 400, "base64"),
    ("non-ASCII base64", PREDICT, {"json": {"instances": [{"b64": "iVBOR\u00e9w0K"}]}}, 400,
     "base64"),
    ("version not a number", f"{PREDICT}?version=two", {"data": {"file": part("normal_0.png")}},
     422, "version"),
    ("version and alias", f"{PREDICT}?version=1&alias=production",
     {"data": {"file": part("normal_0.png")}}, 422, "not both"),
    ("top_k zero", f"{PREDICT}?top_k=0", {"data": {"file": part("normal_0.png")}}, 422, "top_k"),
    ("too many files", PREDICT, {"data": {"file": [part("normal_0.png") for _ in range(5)]}}, 400,
     "at most 4"),
    ("unknown model listing", "/v1/models/nope", {"method": "GET"}, 404, "nope"),
    ("v2 unknown model", "/v2/models/nope/infer",
     {"json": {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}},
     404, "nope"),
    ("v1 JSON nested past the parser", PREDICT,
     {"data": b"[" * 100_000 + b"]" * 100_000, "content_type": "application/json"}, 400,
     "JSON body must be"),
    ("v2 JSON nested past the parser", f"/v2/models/{MODEL}/infer",
     {"data": b"[" * 100_000 + b"]" * 100_000, "content_type": "application/json"}, 400,
     "send an Open Inference Protocol JSON body"),
    ("v2 not json", f"/v2/models/{MODEL}/infer", {"data": "x", "content_type": "text/plain"}, 400,
     "JSON"),
    ("v2 no inputs", f"/v2/models/{MODEL}/infer", {"json": {"inputs": []}}, 400, "inputs"),
    ("v2 wrong shape", f"/v2/models/{MODEL}/infer",
     {"json": {"inputs": [{"name": "image", "shape": [1, 1, 2, 2], "datatype": "FP32",
                           "data": [0, 0, 0, 0]}]}}, 400, "[-1, 1, 32, 32]"),
    ("v2 data does not fill shape", f"/v2/models/{MODEL}/infer",
     {"json": {"inputs": [{"name": "image", "shape": [1, 1, 32, 32], "datatype": "FP32",
                           "data": [0, 1]}]}}, 400, "do not fill"),
    ("v2 wrong input name", f"/v2/models/{MODEL}/infer",
     {"json": {"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES",
                           "data": [b64("normal_0.png")]}]}}, 400, "unknown input 'x'"),
    ("v2 unknown output", f"/v2/models/{MODEL}/infer",
     {"json": {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                           "data": [b64("normal_0.png")]}], "outputs": [{"name": "features"}]}},
     400, "features"),
    ("v2 NaN in the tensor", f"/v2/models/{MODEL}/infer",
     {"data": '{"inputs": [{"name": "image", "shape": [1, 1, 32, 32], "datatype": "FP32", '
              '"data": [NaN' + ", 0" * 1023 + "]}]}", "content_type": "application/json"}, 400,
     "not finite FP32"),
    ("v2 value past FP32's range", f"/v2/models/{MODEL}/infer",
     {"json": {"inputs": [{"name": "image", "shape": [1, 1, 32, 32], "datatype": "FP64",
                           "data": [1e300] + [0] * 1023}]}}, 400, "not finite FP32"),
    ("v2 int datatype", f"/v2/models/{MODEL}/infer",
     {"json": {"inputs": [{"name": "image", "shape": [1], "datatype": "INT8", "data": [1]}]}}, 400,
     "INT8"),
    ("v2 undecodable bytes", f"/v2/models/{MODEL}/infer",
     {"json": {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                           "data": [b64("no_pixels.dcm")]}]}}, 422, "image[0]"),
    ("v2 unknown version", f"/v2/models/{MODEL}/versions/7/ready", {"method": "GET"}, 404,
     "version 7"),
    # The binary tensor data extension: a JSON header of Inference-Header-Content-Length
    # bytes, then the inputs' bytes.
    ("v2 binary header length not a number", f"/v2/models/{MODEL}/infer",
     binary({"inputs": [fp32_header(4096)]}, bytes(4096), length="12a"), 400,
     "Inference-Header-Content-Length must be"),
    ("v2 binary header length past the body", f"/v2/models/{MODEL}/infer",
     binary({"inputs": [fp32_header(4096)]}, bytes(4096), length="999999"), 400,
     "1 to the body's"),
    ("v2 binary header that is not JSON", f"/v2/models/{MODEL}/infer",
     binary({"inputs": [fp32_header(4096)]}, bytes(4096), length="5"), 400,
     "first 5 bytes"),
    ("v2 binary size other than what follows", f"/v2/models/{MODEL}/infer",
     binary({"inputs": [fp32_header(4096)]}, bytes(4000)), 400,
     "binary_data_size is 4096 bytes but 4000 follow"),
    ("v2 binary bytes that belong to no input", f"/v2/models/{MODEL}/infer",
     binary({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                         "data": [b64("normal_0.png")]}]}, b"stray"), 400,
     "5 bytes after the JSON header belong to no input"),
    ("v2 input with neither data nor binary size", f"/v2/models/{MODEL}/infer",
     {"json": {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES"}]}}, 400,
     "neither data nor parameters.binary_data_size"),
    ("v2 binary FP32 not whole values", f"/v2/models/{MODEL}/infer",
     binary({"inputs": [fp32_header(4095)]}, bytes(4095)), 400, "not whole FP32 values"),
    ("v2 binary BYTES element cut short", f"/v2/models/{MODEL}/infer",
     binary({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                         "parameters": {"binary_data_size": 10}}]},
            (100).to_bytes(4, "little") + b"\x89PNG\r\n"), 400,
     "element 0 of 100 bytes runs past the data"),
    ("v2 binary BYTES of more scans than allowed", f"/v2/models/{MODEL}/infer",
     binary({"inputs": [{"name": "image", "shape": [100000], "datatype": "BYTES",
                         "parameters": {"binary_data_size": 400000}}]}, bytes(400000)), 400,
     "holds more than 4 scans"),
    # Request compression (Content-Encoding), as tritonclient can send it.
    ("unknown content encoding", PREDICT,
     {"data": b"x", "content_type": "application/dicom", "headers": {"Content-Encoding": "br"}},
     415, "Content-Encoding 'br' is not supported"),
    ("gzip body cut short", PREDICT,
     {"data": gzip.compress((IMAGES / "normal_0.png").read_bytes())[:40],
      "content_type": "image/png", "headers": {"Content-Encoding": "gzip"}}, 400, "cut short"),
    ("deflate body that is not deflate", f"/v2/models/{MODEL}/infer",
     {"data": b"{not deflate}", "headers": {"Content-Encoding": "deflate"}}, 400,
     "not valid deflate data"),
    ("gzip bomb past the upload limit", PREDICT,
     {"data": gzip.compress(bytes(40 * 1024 * 1024)), "content_type": "image/png",
      "headers": {"Content-Encoding": "gzip"}}, 413, "inflates to over"),
    ("v2 binary_data flag not a boolean", f"/v2/models/{MODEL}/infer",
     {"json": {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                           "data": [b64("normal_0.png")]}],
               "outputs": [{"name": "probabilities", "parameters": {"binary_data": "yes"}}]}},
     400, "outputs[0].parameters.binary_data must be true or false"),
]  # fmt: skip


@pytest.mark.parametrize(("url", "kwargs", "status", "detail"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_bad_requests_get_a_problem_naming_the_cause(
    make_client: Any, check: Any, url: str, kwargs: dict[str, Any], status: int, detail: str
) -> None:
    client = make_client(max_files="4")
    method = kwargs.pop("method", "POST")
    response = check(client.open(url, method=method, **kwargs))
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.json
    assert body["status"] == status
    assert detail in body["detail"], body["detail"]
    assert "Traceback" not in response.get_data(as_text=True)


def test_body_over_the_limit_is_413(make_client: Any, check: Any) -> None:
    client = make_client(max_upload_mb="0.1")
    big = (IMAGES / "big_normal_0.png").read_bytes()
    files = {"file": [(io.BytesIO(big), f"{i}.png") for i in range(1 + 100_000 // len(big))]}
    response = check(client.post(PREDICT, data=files))
    assert response.status_code == 413
    assert response.json["title"] == "Request Entity Too Large"


def test_model_still_loading_is_503_with_retry_after(
    make_client: Any, check: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    loading, release = threading.Event(), threading.Event()
    original = Registry.load

    def slow_load(self: Registry, name: str, version: int) -> Any:
        loading.set()
        release.wait(30)
        return original(self, name, version)

    monkeypatch.setattr(Registry, "load", slow_load)
    client = make_client(preload_models=json.dumps([MODEL]), model_load_wait_s="0")
    try:
        # The preload must hold the model before the request asks for it; otherwise the
        # request would start the load itself and wait for it.
        assert loading.wait(30), "the preload never started loading"
        assert check(client.get("/readyz")).status_code == 503
        assert check(client.get("/v2/health/ready")).status_code == 503
        response = check(client.post(PREDICT, data={"file": part("normal_0.png")}))
        assert response.status_code == 503
        assert int(response.headers["Retry-After"]) >= 1
        assert response.json["title"] == "Model not ready"
    finally:
        release.set()
    # Loading takes a few seconds on an idle machine and much longer beside other test runs:
    # wait generously, and fail on readiness itself rather than on the predict after it.
    deadline = time.monotonic() + 120
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "model never became ready after the load resumed"
        time.sleep(0.1)
    assert check(client.post(PREDICT, data={"file": part("normal_0.png")})).status_code == 200


KEYS = {"predictor": ["predict"], "reader": ["read"]}


@pytest.mark.parametrize(
    ("method", "url", "key", "status"),
    [
        ("POST", PREDICT, None, 401),
        ("POST", PREDICT, "wrong", 401),
        ("POST", PREDICT, "reader", 403),
        ("POST", PREDICT, "predictor", 200),
        ("GET", "/v1/models", None, 401),
        ("GET", "/v1/models", "predictor", 403),
        ("GET", "/v1/models", "reader", 200),
        ("POST", f"/v2/models/{MODEL}/infer", "reader", 403),
        ("GET", f"/v2/models/{MODEL}", "predictor", 403),
        ("GET", "/v2/health/ready", None, 200),
        ("GET", "/healthz", None, 200),
    ],
)
def test_api_keys_and_scopes(
    make_client: Any, check: Any, method: str, url: str, key: str | None, status: int
) -> None:
    keys = [{"name": n, "sha256": hash_key(f"key-{n}"), "scopes": s} for n, s in KEYS.items()]
    client = make_client(auth_disabled="false", api_keys=json.dumps(keys))
    headers = {"Authorization": f"Bearer key-{key}"} if key else {}
    kwargs: dict[str, Any] = {}
    if method == "POST" and "v2" in url:
        kwargs["json"] = {
            "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                        "data": [b64("normal_0.png")]}]
        }  # fmt: skip
    elif method == "POST":
        kwargs["data"] = {"file": part("normal_0.png")}
    response = check(client.open(url, method=method, headers=headers, **kwargs))
    assert response.status_code == status, response.get_data(as_text=True)


def test_a_request_whose_scans_decode_past_the_pixel_budget_is_413(
    make_client: Any, check: Any
) -> None:
    client = make_client(max_request_megapixels="0.5")  # two 512 x 512 scans: 0.52 MP
    one = check(client.post(PREDICT, data={"file": part("big_normal_0.png")}))
    assert one.status_code == 200
    two = check(
        client.post(PREDICT, data={"file": [part("big_normal_0.png"), part("big_normal_1.png")]})
    )
    assert two.status_code == 413
    assert two.json["detail"] == (
        "big_normal_1.png decodes to 0.26 megapixels, past what is left of the 0.5 one request"
        " may hold (send fewer scans per request)"
    )  # charged before it is decoded
    v2 = check(
        client.post(
            f"/v2/models/{MODEL}/infer",
            json={"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES",
                              "data": [b64("big_normal_0.png"), b64("big_pneumonia_0.png")]}]},
        )
    )  # fmt: skip
    assert v2.status_code == 413 and "image[1]" in v2.json["detail"]
