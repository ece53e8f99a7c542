"""Fixtures for the inference service: a model really trained by the trainer, published to a
fresh registry per test, apps built through the factory, and responses checked against the spec.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from models.card import CARD_FILE, ONNX_FILE, ModelCard
from service.registry import Registry
from service.storage import open_store

REPO = Path(__file__).resolve().parents[2]
SPEC_PATH = REPO / "api_spec" / "inference.openapi.yaml"
MODEL = "chest-xray"


@dataclass(frozen=True)
class Trained:
    """The trainer's run (version 1) and a re-export at another temperature (version 2)."""

    v1_dir: Path
    v1_card: ModelCard
    v2_dir: Path
    v2_card: ModelCard
    torch_model: Any  # models.network.Classifier in eval mode

    def dir_and_card(self, version: int) -> tuple[Path, ModelCard]:
        return (self.v1_dir, self.v1_card) if version == 1 else (self.v2_dir, self.v2_card)


@pytest.fixture(scope="session")
def trained(pneumonia_small_npz: Path, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """Train efficientnet_lite0 at 32 px for one epoch with the real trainer and exporter."""
    from models import checkpoint
    from models.export import export_onnx
    from models.finetune import build_model
    from models.runner import run_training
    from models.spec import JobSpec

    cached = os.environ.get("SCANTUNE_TEST_TRAINED_DIR")  # reuse a run while iterating locally
    root = Path(cached) if cached else tmp_path_factory.mktemp("trained")
    spec = JobSpec.model_validate(
        {
            "model_name": MODEL,
            "dataset": {
                "uri": str(pneumonia_small_npz),
                "format": "npz",
                "classes": ["normal", "pneumonia"],
            },
            "image_size": 32,
            "epochs": 1,
        }
    )
    if cached and (root / "v1" / CARD_FILE).exists():
        card = ModelCard.from_json((root / "v1" / CARD_FILE).read_text())
    else:
        card = run_training(spec, root / "v1").card
    model = build_model(spec, len(card.classes), cache_dir=root / "v1" / "cache")
    best = checkpoint.load(root / "v1" / "checkpoints" / checkpoint.BEST)
    model.load_state_dict(best["model"])
    model.eval()
    # Version 2: the same network calibrated differently, so its probabilities differ.
    v2_dir = root / "v2"
    temperature = card.calibration.temperature * 2.0
    export_onnx(model, v2_dir / ONNX_FILE, size=32, channels=1, temperature=temperature)
    v2_card = card.model_copy(
        update={
            "calibration": card.calibration.model_copy(update={"temperature": temperature}),
            "onnx_sha256": hashlib.sha256((v2_dir / ONNX_FILE).read_bytes()).hexdigest(),
        }
    )
    return Trained(root / "v1", card, v2_dir, v2_card, model)


def publish(registry: Registry, trained: Trained, version: int, name: str = MODEL) -> ModelCard:
    """Publish version 1 or 2 (only model.onnx and the card: the rest is not served)."""
    source, card = trained.dir_and_card(version)
    return registry.publish(name, version, _onnx_only(source), card)


def _onnx_only(source: Path) -> Path:
    target = source.parent / f"{source.name}-onnx-only"
    target.mkdir(exist_ok=True)
    shutil.copy(source / ONNX_FILE, target / ONNX_FILE)
    return target


@pytest.fixture
def registry(tmp_path: Path, trained: Trained) -> Registry:
    """A local registry with version 1 published and `production` pointing at it."""
    reg = Registry(open_store(f"file://{tmp_path / 'artifacts'}"))
    publish(reg, trained, 1)
    reg.set_alias(MODEL, "production", 1, actor="test")
    return reg


@pytest.fixture
def make_client(
    registry: Registry, monkeypatch: pytest.MonkeyPatch, openapi: Any
) -> Iterator[Callable[..., Any]]:
    """Build the app through its factory with settings from the environment; yields a client
    factory taking extra SCANTUNE_* variables (names without the prefix). Every response the
    client receives is validated against the OpenAPI spec."""
    from flask.testing import FlaskClient

    from service.inference import EXTENSION, create_app

    class ValidatingClient(FlaskClient):
        def open(self, *args: Any, **kwargs: Any) -> Any:
            response = super().open(*args, **kwargs)
            validate_response(openapi, response)
            return response

    apps = []

    def make(**env: str) -> Any:
        monkeypatch.setenv("SCANTUNE_ARTIFACT_URI", registry.store.uri)
        monkeypatch.setenv("SCANTUNE_AUTH_DISABLED", "true")
        monkeypatch.setenv("SCANTUNE_ALIAS_POLL_INTERVAL_S", "3600")
        for key, value in env.items():
            monkeypatch.setenv(f"SCANTUNE_{key.upper()}", value)
        app = create_app()
        app.testing = True
        app.test_client_class = ValidatingClient
        apps.append(app)
        return app.test_client()

    yield make
    for app in apps:
        app.extensions[EXTENSION].manager.stop()


@pytest.fixture
def client(make_client: Callable[..., Any]) -> Any:
    return make_client()


# --- the OpenAPI contract -------------------------------------------------------------------


@pytest.fixture(scope="session")
def openapi() -> Any:
    import json

    from openapi_core import Config, OpenAPI

    config = Config(
        extra_media_type_deserializers={
            "application/problem+json": json.loads,
            "application/fhir+json": json.loads,
        }
    )
    return OpenAPI.from_dict(yaml.safe_load(SPEC_PATH.read_text()), config=config)


class _RequestLine:
    """The method and URL of a sent request: all response validation needs (the body of a
    multipart upload has been consumed by then)."""

    def __init__(self, method: str, url: str) -> None:
        from urllib.parse import parse_qsl, urlsplit

        from openapi_core.datatypes import RequestParameters
        from werkzeug.datastructures import Headers, ImmutableMultiDict

        parts = urlsplit(url)
        self.host_url = f"{parts.scheme}://{parts.netloc}"
        self.path = parts.path
        self.full_url_pattern = self.host_url + self.path
        self.method = method.lower()
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(parse_qsl(parts.query)), header=Headers(), cookie={}
        )
        self.content_type = "application/json"
        self.body = None


def validate_response(openapi: Any, response: Any) -> None:
    """Raise unless a Flask test-client or `requests` response matches the spec."""
    if hasattr(response, "elapsed"):  # requests.Response
        from openapi_core.contrib.requests import RequestsOpenAPIResponse

        resp: Any = RequestsOpenAPIResponse(response)
    else:
        from openapi_core.contrib.werkzeug import WerkzeugOpenAPIResponse

        resp = WerkzeugOpenAPIResponse(response)
    openapi.validate_response(_RequestLine(response.request.method, response.request.url), resp)


@pytest.fixture
def check(openapi: Any) -> Callable[[Any], Any]:
    """Validate a response against the spec and return it (explicit form of the hooks)."""

    def validate(response: Any) -> Any:
        validate_response(openapi, response)
        return response

    return validate


@pytest.fixture
def http(openapi: Any) -> Iterator[Any]:
    """A requests session whose every response is validated against the spec."""
    import requests

    with requests.Session() as session:
        session.hooks["response"].append(lambda r, *a, **k: validate_response(openapi, r))
        yield session
