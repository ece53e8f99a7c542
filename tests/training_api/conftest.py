"""Fixtures for the training API: the app built by its factory, clients whose every response
is validated against api_spec/openapi.yaml, and API keys for each scope."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml
from flask import Flask
from flask.testing import FlaskClient
from openapi_core import Config, OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIResponse
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIResponse
from openapi_core.datatypes import RequestParameters
from openapi_core.validation.response.exceptions import MissingData
from werkzeug.datastructures import ImmutableMultiDict

from service.auth import hash_key
from tests.conftest import data_roots

if TYPE_CHECKING:
    from models.card import ModelAccess

SPEC_PATH = Path(__file__).resolve().parents[2] / "api_spec" / "openapi.yaml"


@dataclass(frozen=True)
class Key:
    name: str
    secret: str
    scopes: tuple[str, ...]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"}


KEYS = {
    "admin": Key("admin", "admin-key-0123456789", ("read", "jobs:write", "models:write")),
    "ci": Key("ci", "ci-key-0123456789", ("read", "jobs:write")),
    "reader": Key("reader", "reader-key-0123456789", ("read",)),
    "pacs": Key("pacs", "pacs-key-0123456789", ("read", "predict")),  # predicts, reports outcomes
}


def api_keys_setting() -> str:
    """SCANTUNE_API_KEYS for the keys above (stored hashed, like production). They act for
    one client, "team", so they share jobs; tests/training_api/test_security.py gives keys
    clients of their own."""
    return json.dumps(
        [
            {
                "name": k.name,
                "sha256": hash_key(k.secret),
                "scopes": list(k.scopes),
                "client": "team",
            }
            for k in KEYS.values()
        ]
    )


def load_contract() -> OpenAPI:
    spec = yaml.safe_load(SPEC_PATH.read_text())
    spec["servers"] = [{"url": "/"}]  # match whatever host the test talks to
    config = Config(extra_media_type_deserializers={"application/problem+json": json.loads})
    return OpenAPI.from_dict(spec, config=config)


CONTRACT = load_contract()


@dataclass
class SentRequest:
    """What openapi-core needs of a request to find its operation; the body is not re-read."""

    host_url: str
    path: str
    method: str
    parameters: RequestParameters
    body: bytes | None = None
    content_type: str = "application/octet-stream"


def assert_conforms(response: Any) -> None:
    """Fail unless `response` (werkzeug test response or requests response) fits the spec."""
    if hasattr(response, "get_data"):
        wrapped: Any = WerkzeugOpenAPIResponse(response)
    else:
        wrapped = RequestsOpenAPIResponse(response)
    url = urlsplit(response.request.url)
    request = SentRequest(
        host_url=f"{url.scheme}://{url.netloc}/",
        path=url.path,
        method=response.request.method.lower(),
        parameters=RequestParameters(query=ImmutableMultiDict(parse_qsl(url.query))),
    )
    try:
        CONTRACT.validate_response(request, wrapped)
    except Exception as exc:
        if isinstance(exc, MissingData) and wrapped.content_type.startswith("text/plain"):
            return  # openapi-core calls an empty body missing; an empty log is still a string
        cause = exc.__cause__ or exc
        pytest.fail(
            f"{response.request.method} {response.request.url} -> {response.status_code} "
            f"breaks api_spec/openapi.yaml: {exc}; {cause}\nbody: {_body(response)[:2000]}"
        )


def _body(response: Any) -> str:
    return response.get_data(as_text=True) if hasattr(response, "get_data") else response.text


class ContractClient(FlaskClient):
    """A test client that checks every response it receives against the OpenAPI contract."""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        response = super().open(*args, **kwargs)
        assert_conforms(response)
        return response


@pytest.fixture
def training_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Embedded-default settings in tmp_path: SQLite, a local artifact folder, our keys."""
    monkeypatch.setenv("SCANTUNE_DATABASE_URL", f"sqlite:///{tmp_path / 'jobs.db'}")
    monkeypatch.setenv("SCANTUNE_ARTIFACT_URI", (tmp_path / "artifacts").as_uri())
    monkeypatch.setenv("SCANTUNE_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("SCANTUNE_API_KEYS", api_keys_setting())
    monkeypatch.setenv("SCANTUNE_MAX_UPLOAD_MB", "0.05")
    monkeypatch.setenv("SCANTUNE_LOCAL_DATA_ROOTS", data_roots(tmp_path))
    monkeypatch.setenv("SCANTUNE_WEBHOOK_ALLOWED_HOSTS", '["127.0.0.1"]')
    monkeypatch.delenv("SCANTUNE_AUTH_DISABLED", raising=False)
    (tmp_path / "artifacts").mkdir()
    return tmp_path


@pytest.fixture
def app(training_env: Path) -> Iterator[Flask]:
    """The app with no supervisor: submitted jobs stay queued, so tests decide what happens."""
    from service.training_api import create_app, services

    app = create_app(start_supervisor=False)
    app.test_client_class = ContractClient
    yield app
    with app.app_context():
        services().jobs.stop()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """Authenticated with every scope."""
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = KEYS["admin"].headers["Authorization"]
    return client


@pytest.fixture
def anonymous(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A file that exists where a job spec points (jobs never run in the in-process tests)."""
    path = tmp_path / "data.npz"
    path.write_bytes(b"not read: no supervisor runs in these tests")
    return path


def job_spec(dataset: Path | str, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model_name": "chest-xray",
        "dataset": {"uri": str(dataset), "format": "npz"},
        "base_model": "efficientnet_lite0",
        "image_size": 32,
        "epochs": 1,
    }
    spec.update(overrides)
    return spec


def publish_version(
    artifacts: Path,
    name: str,
    version: int,
    *,
    val_auc: float = 0.97,
    metrics: dict[str, float] | None = None,
    access: ModelAccess | None = None,
    **card_fields: Any,
) -> None:
    """Publish a small stand-in version (the registry treats model.onnx as opaque bytes);
    `card_fields` set more of its card (a threshold, estimates)."""
    from models.card import Calibration, DatasetInfo, InputSpec, ModelCard, Parity, TrainingInfo
    from service.registry import Registry
    from service.storage import open_store

    run = artifacts.parent / f"run-{name}-{version}"
    run.mkdir()
    onnx = f"onnx bytes of {name} v{version}".encode()
    (run / "model.onnx").write_bytes(onnx)
    (run / "plots").mkdir()
    (run / "plots" / "roc.png").write_bytes(b"\x89PNG stand-in")
    card = ModelCard(
        name=name,
        classes=("normal", "pneumonia"),
        input=InputSpec(size=32, channels=1, mean=(0.5,), std=(0.25,)),
        base_model="efficientnet_lite0",
        dataset=card_fields.pop(
            "dataset", DatasetInfo(uri="/data/x.npz", format="npz", sha256="0" * 64)
        ),
        metrics={"val_auc": val_auc, **(metrics or {}), "per_class": {"normal": {"f1": 0.9}}},
        calibration=Calibration(temperature=1.3, applied_in_graph=True),
        parity=Parity(max_abs_diff=1e-6, images=32, tolerance=1e-4),
        training=TrainingInfo(
            seconds=1.0, device="cpu", hardware="test", epochs_run=1, best_epoch=1, seed=0
        ),
        onnx_sha256=hashlib.sha256(onnx).hexdigest(),
        access=access,
        **card_fields,
    )
    Registry(open_store(artifacts.as_uri())).publish(name, version, run, card)
