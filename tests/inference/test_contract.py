"""Schemathesis against the inference app in-process: generated requests for every operation
in api_spec/inference.openapi.yaml, aimed at a really trained model; no 5xx, and every
response conforms to the spec."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode

from tests.contract_checks import CHECKS
from tests.inference.conftest import MODEL, SPEC_PATH

# A DICOM body is bytes like any other upload (the service, not the client, parses it).
schemathesis.serializer.alias("application/dicom", "application/octet-stream")

SCHEMA = schemathesis.openapi.from_path(SPEC_PATH)
SCHEMA.config.update(base_url="http://localhost")
SCHEMA.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])


@pytest.fixture
def served(make_client: Any) -> Flask:
    """The app, ready, with version 1 of the trained model loaded as `production`."""
    client = make_client(preload_models=json.dumps([MODEL]))
    deadline = time.monotonic() + 60
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the preloaded model never became ready"
        time.sleep(0.05)
    app: Flask = client.application
    return app


@SCHEMA.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_generated_requests_get_no_5xx_and_conforming_responses(
    served: Flask, case: schemathesis.Case
) -> None:
    if "name" in (case.path_parameters or {}):
        case.path_parameters["name"] = MODEL  # random names only ever find the 404
    case.call_and_validate(app=served, checks=CHECKS)
