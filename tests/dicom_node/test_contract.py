"""Schemathesis against the node's HTTP app in-process (the SCP not started): generated
requests for every operation in api_spec/dicom-node.openapi.yaml; no 5xx, and every response
conforms to the spec. A real STOW-RS body is checked against it too."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode

from tests.contract_checks import CHECKS
from tests.dicom_node.parts import make_study
from tests.dicom_node.test_app import encoded, multipart

SPEC_PATH = Path(__file__).resolve().parents[2] / "api_spec" / "dicom-node.openapi.yaml"
# A multipart/related body is bytes to the client; the node parses it.
schemathesis.serializer.alias("multipart/related", "application/octet-stream")

SCHEMA = schemathesis.openapi.from_path(SPEC_PATH)
SCHEMA.config.update(base_url="http://localhost")
SCHEMA.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Flask]:
    """The node, its SCP listening on a port the system picks (so /readyz is ready)."""
    from service.dicom_node.app import EXTENSION, create_app, stop_node

    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'node.db'}",
        "DICOM_SPOOL_DIR": str(tmp_path / "spool"),
        "DICOM_ROUTES": json.dumps([{"model": "chest-xray"}]),
        "DICOM_PORT": "0",
        "AUTH_DISABLED": "true",
    }
    for key, value in env.items():
        monkeypatch.setenv(f"SCANTUNE_{key}", value)
    app = create_app()
    yield app
    stop_node(app.extensions[EXTENSION])


@SCHEMA.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_generated_requests_get_no_5xx_and_conforming_responses(
    served: Flask, case: schemathesis.Case
) -> None:
    case.call_and_validate(app=served, checks=CHECKS)


def test_a_real_stow_answer_conforms(served: Flask) -> None:
    body, content_type = multipart(*(encoded(ds) for ds in make_study(2)), b"junk")
    operation: Any = SCHEMA["/dicomweb/studies"]["POST"]
    case = operation.Case(body=body, media_type=content_type)
    response = case.call(app=served, headers={"Content-Type": content_type})
    assert response.status_code == 202
    case.validate_response(response, checks=CHECKS)


def test_the_series_of_a_real_study_conform(served: Flask) -> None:
    body, content_type = multipart(*(encoded(ds) for ds in make_study(2)))
    served.test_client().post("/dicomweb/studies", data=body, content_type=content_type)
    operation: Any = SCHEMA["/v1/series"]["GET"]
    case = operation.Case(query={"limit": 5})
    response = case.call(app=served)
    assert response.status_code == 200 and len(response.json()["items"]) == 1
    case.validate_response(response, checks=CHECKS)
