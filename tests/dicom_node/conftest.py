"""Fixtures of the DICOM node's tests: a trained model served by the inference service under
gunicorn, Orthanc as the PACS, and the node itself under gunicorn (`scantune serve dicom`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from service.auth import hash_key
from service.jobs.database import make_engine, migrate
from service.registry import Registry
from service.storage import open_store
from tests.conftest import free_port
from tests.dicom_node.parts import MODALITY_AE, PACS_AE, Gunicorn, Orthanc
from tests.inference.conftest import MODEL, Trained, publish
from tests.inference.conftest import trained as trained  # the fixture

NODE_KEY, STOW_KEY = "node-key-for-inference", "stow-key-for-the-node"
OPS_KEY = "ops-key-for-the-node"  # series:read: the operators' view
SIGNING_KEY = "prediction-signing-key-of-the-tests"  # inference signs, training checks


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """The job store's database, migrated: SQLite, and PostgreSQL where one is given."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'node.db'}"
    else:
        url = str(request.getfixturevalue("postgres_url"))
    found = make_engine(url)
    migrate(found)
    yield found
    found.dispose()


@pytest.fixture(scope="module")
def inference(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gunicorn]:
    """The inference service serving the trained model; it requires API keys, and the node
    holds one with the scopes it needs (predict, read)."""
    root = tmp_path_factory.mktemp("inference")
    registry = Registry(open_store(f"file://{root / 'artifacts'}"))
    publish(registry, trained, 1)
    registry.set_alias(MODEL, "production", 1, actor="test")
    keys = [{"name": "dicom-node", "sha256": hash_key(NODE_KEY), "scopes": ["predict", "read"]}]
    env = {
        "SCANTUNE_ARTIFACT_URI": registry.store.uri,
        "SCANTUNE_API_KEYS": json.dumps(keys),
        "SCANTUNE_PRELOAD_MODELS": json.dumps([MODEL]),
        "SCANTUNE_PREDICTION_SIGNING_KEY": SIGNING_KEY,
    }
    server = Gunicorn("inference", env, root).start()
    yield server
    server.stop()


@pytest.fixture
def node_dicom_port() -> int:
    return free_port()


@pytest.fixture
def orthanc(tmp_path: Path, node_dicom_port: int) -> Iterator[Orthanc]:
    pacs = Orthanc(tmp_path / "orthanc", node_dicom_port).start()
    yield pacs
    pacs.stop()


@pytest.fixture
def make_node(
    tmp_path: Path, inference: Gunicorn, orthanc: Orthanc, node_dicom_port: int
) -> Iterator[Callable[..., Gunicorn]]:
    """Builds (not starts) the node: Orthanc both sends to it (as ORTHANC) and receives its
    results, a modality (MODALITY) sends from loopback; CR series go to the model."""
    nodes: list[Gunicorn] = []

    def make(**settings: object) -> Gunicorn:
        values: dict[str, object] = {
            "database_url": f"sqlite:///{tmp_path / 'node.db'}",
            "dicom_spool_dir": str(tmp_path / "spool"),
            "dicom_port": node_dicom_port,
            "dicom_allowed_callers": [
                {"ae_title": MODALITY_AE, "host": "127.0.0.1"},
                {"ae_title": PACS_AE, "host": "127.0.0.1"},
            ],
            "dicom_routes": [{"model": MODEL, "alias": "production", "modality": "CR"}],
            "dicom_destinations": [
                {"ae_title": PACS_AE, "host": "127.0.0.1", "port": orthanc.dicom_port}
            ],
            "dicom_series_quiet_s": 2,
            "dicom_retry_first_s": 0.5,
            "dicom_retry_max_s": 2,
            "inference_url": inference.url,
            "dicom_inference_api_key": NODE_KEY,
            "api_keys": [{"name": "stow-client", "sha256": hash_key(STOW_KEY),
                          "scopes": ["predict"]},
                         {"name": "ops", "sha256": hash_key(OPS_KEY), "scopes": ["series:read"]}],
            **settings,
        }  # fmt: skip
        env = {
            f"SCANTUNE_{k.upper()}": v if isinstance(v, str) else json.dumps(v)
            for k, v in values.items()
        }
        node = Gunicorn("dicom", env, tmp_path / "node")
        node.port_dicom = int(values["dicom_port"])  # type: ignore[call-overload]
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.stop()


@pytest.fixture
def node(make_node: Callable[..., Gunicorn]) -> Gunicorn:
    return make_node().start()
