"""schemathesis against both services as they run: `scantune up` (gunicorn, real workers,
real sockets), every check (`--checks all`: no 5xx, status codes, content types, headers and
bodies as api_spec/ says, schema-valid requests accepted, invalid ones refused, Allow
headers...), a bounded number of generated requests. The in-process contract tests
(tests/*/test_contract.py) go deeper per operation; this one sees what only a served app
shows: gunicorn's own answers, the request line as it arrives, real multipart bodies.

Per-operation exceptions, each with its reason, are in tests/service/schemathesis.toml.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.auth import hash_key
from tests.conftest import REPO
from tests.service.running import Up

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CONFIG = Path(__file__).with_name("schemathesis.toml")
KEY = "contract-test-key"
SCOPES = ["read", "jobs:write", "models:write", "predict"]
EXAMPLES = 20  # per operation and phase: about 1,700 requests, under a minute here
SPECS = {"training": "openapi.yaml", "inference": "inference.openapi.yaml"}
# The checks left out, and why: the inference service's GET /v1/models/{name} route also
# matches `NAME:predict` (a model name never holds a colon), so OPTIONS there advertises GET
# and a GET there is a 400, not a 405. The inference half of issue 20 reshapes those routes;
# drop this then.
EXCLUDED = {"inference": ["--exclude-checks", "allow_header_conformance,unsupported_method"]}


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    keys = [{"name": "contract", "sha256": hash_key(KEY), "scopes": SCOPES}]
    instance = Up(tmp_path_factory.mktemp("up"), {"SCANTUNE_API_KEYS": json.dumps(keys)})
    instance.start()
    yield instance
    instance.kill()


def schemathesis_cli() -> list[str]:
    found = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert found, "schemathesis is in the dev extra"
    return [found]


@pytest.mark.parametrize("service", sorted(SPECS))
def test_the_running_service_keeps_its_contract(up: Up, service: str, tmp_path: Path) -> None:
    url = up.url if service == "training" else up.inference_url
    command = [
        *schemathesis_cli(),
        "--no-color",
        "--config-file", str(CONFIG),
        "run", str(REPO / "api_spec" / SPECS[service]),
        "--url", url,
        "--checks", "all",
        *EXCLUDED.get(service, []),
        "--max-examples", str(EXAMPLES),
        "--seed", "20",
        "--header", f"Authorization: Bearer {KEY}",
    ]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, report[-6000:]
    generated = [line for line in report.splitlines() if " generated, " in line]
    assert generated and "passed" in generated[-1], report[-3000:]
    assert int(generated[-1].split()[0]) >= 100 * len(SPECS), generated[-1]
