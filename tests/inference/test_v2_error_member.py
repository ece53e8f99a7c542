"""Open Inference Protocol errors: the problem shape plus the `error` member V2 clients read;
/v1 problems stay without it."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from service.auth import hash_key
from service.registry import Registry
from tests.inference.conftest import MODEL, Trained, publish
from tests.inference.test_models import tamper

IMAGES = Path(__file__).resolve().parents[1] / "data" / "images"
INFER = f"/v2/models/{MODEL}/infer"
PROBLEM_MEMBERS = {"type", "title", "status", "detail", "request_id"}


def scan_tensor(name: str = "normal_0.png") -> dict[str, Any]:
    data = base64.b64encode((IMAGES / name).read_bytes()).decode()
    return {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [data]}]}


def fp32_tensor(shape: list[int], values: int) -> dict[str, Any]:
    return {"inputs": [{"name": "image", "shape": shape, "datatype": "FP32",
                        "data": [0.0] * values}]}  # fmt: skip


@pytest.fixture
def client(make_client: Any, registry: Registry, trained: Trained) -> Any:
    """Auth on (key `all` has every scope, `reader` only `read`), a 0.1 MB body limit, and a
    version 2 whose ONNX bytes do not match its card."""
    publish(registry, trained, 2)
    tamper(registry, 2)
    keys = [
        {"name": "all", "sha256": hash_key("key-all"), "scopes": ["predict", "read"]},
        {"name": "reader", "sha256": hash_key("key-reader"), "scopes": ["read"]},
    ]
    return make_client(auth_disabled="false", api_keys=json.dumps(keys), max_upload_mb="0.1")


# (case id, method, url, key, JSON body, status, text the detail must contain)
V2_CASES: list[tuple[str, str, str, str | None, Any, int, str]] = [
    ("unknown model", "POST", "/v2/models/nope/infer", "all", scan_tensor(), 404, "nope"),
    ("unknown version", "GET", f"/v2/models/{MODEL}/versions/7", "all", None, 404, "version 7"),
    ("bad tensor", "POST", INFER, "all", fp32_tensor([1, 1, 32, 32], 2), 400, "do not fill"),
    ("undecodable scan", "POST", INFER, "all", scan_tensor("no_pixels.dcm"), 422, "image[0]"),
    ("body too large", "POST", INFER, "all", fp32_tensor([1, 1, 32, 32], 40_000), 413,
     "larger than"),
    ("corrupt artifact", "POST", f"/v2/models/{MODEL}/versions/2/infer", "all", scan_tensor(),
     503, "does not match the card"),
    ("no key", "POST", INFER, None, scan_tensor(), 401, ""),
    ("missing scope", "POST", INFER, "reader", scan_tensor(), 403, "predict"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "url", "key", "body", "status", "detail"),
                         [c[1:] for c in V2_CASES], ids=[c[0] for c in V2_CASES])  # fmt: skip
def test_v2_problems_carry_the_error_member(
    client: Any, method: str, url: str, key: str | None, body: Any, status: int, detail: str
) -> None:
    headers = {"Authorization": f"Bearer key-{key}"} if key else {}
    response = client.open(url, method=method, json=body, headers=headers)
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    problem = response.json
    assert problem["status"] == status and detail in problem["detail"]
    assert problem["error"] == problem["detail"]


def test_an_unrouted_v2_path_carries_it_too(client: Any) -> None:
    plain = FlaskClient(client.application)  # the path is not in the spec: no validation
    response = plain.get("/v2/models/nope/statistics", headers={"X-API-Key": "key-all"})
    assert response.status_code == 404
    assert response.json["error"] == response.json["detail"]


# (case id, method, url, key, multipart body, status)
V1_CASES: list[tuple[str, str, str, str | None, Any, int]] = [
    ("unknown model", "GET", "/v1/models/nope", "all", None, 404),
    ("corrupt artifact", "POST", f"/v1/models/{MODEL}:predict?version=2", "all",
     {"file": (io.BytesIO((IMAGES / "normal_0.png").read_bytes()), "normal_0.png")}, 503),
    ("no key", "GET", "/v1/models", None, None, 401),
    ("not a form", "POST", f"/v1/models/{MODEL}:predict", "all", "hello", 415),
]  # fmt: skip


@pytest.mark.parametrize(("method", "url", "key", "data", "status"),
                         [c[1:] for c in V1_CASES], ids=[c[0] for c in V1_CASES])  # fmt: skip
def test_v1_problems_are_unchanged(
    client: Any, method: str, url: str, key: str | None, data: Any, status: int
) -> None:
    headers = {"Authorization": f"Bearer key-{key}"} if key else {}
    content_type = "text/plain" if isinstance(data, str) else None
    response = client.open(
        url, method=method, data=data, headers=headers, content_type=content_type
    )
    assert response.status_code == status, response.get_data(as_text=True)
    assert set(response.json) == PROBLEM_MEMBERS
