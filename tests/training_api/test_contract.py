"""Schemathesis against the app in-process: generated requests for every operation in
api_spec/openapi.yaml; no 5xx, and every response conforms to the spec."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings

from tests.contract_checks import CHECKS
from tests.training_api.conftest import KEYS, SPEC_PATH, publish_version

SCHEMA = schemathesis.openapi.from_path(SPEC_PATH)
SCHEMA.config.update(base_url="http://localhost")


@pytest.fixture
def served(app: Flask, training_env: Path) -> Flask:
    """This test's app, with one published model to find."""
    publish_version(training_env / "artifacts", "chest-xray", 1)
    return app


@SCHEMA.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_generated_requests_get_no_5xx_and_conforming_responses(
    served: Flask, case: schemathesis.Case
) -> None:
    case.call_and_validate(app=served, headers=KEYS["admin"].headers, checks=CHECKS)
