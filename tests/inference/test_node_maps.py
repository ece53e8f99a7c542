"""What the DICOM node's inference client gets from the inference app served over HTTP: with
`explain=true` a map per scan from a model with a CAM output, and from one without (a model
exported elsewhere) the predictions alone, asked again without maps instead of failing the
series; for a withdrawn version, a refusal that says why."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import onnx
import pytest
import requests
from werkzeug.serving import make_server

from models.card import ONNX_FILE
from service.dicom_node.classify import InferenceClient
from service.registry import Registry
from tests.conftest import free_port
from tests.inference.conftest import MODEL, Trained

SCAN = Path(__file__).resolve().parents[1] / "data" / "images" / "normal_0_mono1.dcm"


def without_cam(trained: Trained, folder: Path) -> tuple[Path, Any]:
    """Version 1's export with its `cam` output taken out of the graph, and its card."""
    source, card = trained.dir_and_card(1)
    graph = onnx.load(source / ONNX_FILE)
    kept = [o for o in graph.graph.output if o.name != card.outputs.cam]
    assert len(kept) == len(graph.graph.output) - 1
    del graph.graph.output[:]
    graph.graph.output.extend(kept)
    folder.mkdir()
    onnx.save(graph, folder / ONNX_FILE)
    digest = hashlib.sha256((folder / ONNX_FILE).read_bytes()).hexdigest()
    return folder, card.model_copy(update={"onnx_sha256": digest})


@pytest.fixture
def served(make_client: Callable[..., Any]) -> Iterator[str]:
    app = make_client(access_recheck_s="0").application
    port = free_port()
    httpd = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    httpd.shutdown()
    thread.join(timeout=5)


def test_maps_come_from_a_model_with_a_cam_output_and_their_absence_is_no_failure(
    registry: Registry, trained: Trained, served: str, tmp_path: Path
) -> None:
    client = InferenceClient(served, None, timeout_s=60)
    files = [SCAN.read_bytes()] * 2
    found = client.classify(MODEL, "production", files, explain=True)
    assert [set(p["explanation"]) >= {"png_base64", "width", "height"}
            for p in found.predictions] == [True, True]  # fmt: skip
    plain = client.classify(MODEL, "production", files)
    assert all("explanation" not in p for p in plain.predictions)

    folder, card = without_cam(trained, tmp_path / "no-cam")
    registry.publish("exported-elsewhere", 1, folder, card)
    registry.set_alias("exported-elsewhere", "production", 1, actor="test")
    refused = requests.post(f"{served}/v1/models/exported-elsewhere:predict?explain=true",
                            files={"file": SCAN.read_bytes()}, timeout=60)  # fmt: skip
    assert refused.status_code == 400 and "no CAM output" in refused.json()["detail"]
    asked = client.classify("exported-elsewhere", None, files, explain=True)  # asked again
    assert asked.model["name"] == "exported-elsewhere"
    assert [p["label"] for p in asked.predictions] == [p["label"] for p in plain.predictions]
    assert all("explanation" not in p for p in asked.predictions)


def test_a_series_for_a_withdrawn_version_fails_saying_why(registry: Registry, served: str) -> None:
    from service.dicom_node.classify import Rejected
    from service.withdrawals import Withdrawals

    Withdrawals(registry.store).set(MODEL, 1, withdrawn=True, reason="recalled", actor="ops")
    with pytest.raises(Rejected) as refused:
        InferenceClient(served, None, timeout_s=60).classify(MODEL, None, [SCAN.read_bytes()])
    assert str(refused.value) == (
        f"inference answered 410: model '{MODEL}' version 1 was withdrawn: recalled"
        " (ask for another version, or move the alias)"
    )
