"""Schemathesis against the node's HTTP app in-process (the SCP not started): generated
requests for every operation in api_spec/dicom-node.openapi.yaml; no 5xx, and every response
conforms to the spec. A real STOW-RS body is checked against it too, and a recall with
withdrawals open (generated requests find none)."""

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
from tests.dicom_node.test_recalls import PACS, RIS, classified

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


def test_a_recall_s_open_withdrawals_conform(served: Flask) -> None:
    from service.dicom_node.app import EXTENSION

    node = served.extensions[EXTENSION]
    node.worker.stop()  # the withdrawals stay as made here: to destinations not configured
    queue, book = node.queue, node.worker.recalls
    kept, gone = classified(queue, 1), classified(queue, 2)
    for due in queue.due_deliveries():
        queue.delivered(due.delivery_id)
    queue.forget_files(gone)  # delivered before results were kept: not_kept
    recall_id, _ = book.request("chest-xray", 3, "misses pneumothorax", "ops")
    book.apply_new()
    pacs, ris = sorted(book.due(), key=lambda d: d.destination)
    book.failed(pacs.withdrawal_id, "association not established", 60)
    book.ended(ris.withdrawal_id, "rejected", "HL7 ACK CR")
    operation: Any = SCHEMA["/v1/recalls/{recall_id}"]["GET"]
    case = operation.Case(path_parameters={"recall_id": recall_id})
    response = case.call(app=served)
    assert response.status_code == 200
    listed = {(w["series_id"], w["destination"]): w for w in response.json()["open"]}
    assert {key: w["state"] for key, w in listed.items()} == {
        (gone, PACS): "not_kept", (gone, RIS): "not_kept",
        (kept, PACS): "pending", (kept, RIS): "rejected",
    }  # fmt: skip
    assert listed[kept, PACS]["next_attempt_at"] and not listed[kept, RIS]["next_attempt_at"]
    case.validate_response(response, checks=CHECKS)
