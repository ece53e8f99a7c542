"""The inference service must never import torch (it ships without it)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_importing_and_creating_the_app_leaves_torch_unimported(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        import service.inference
        from service.config import InferenceSettings
        app = service.inference.create_app(InferenceSettings(auth_disabled=True))
        client = app.test_client()
        assert client.get("/v1/models").status_code == 200
        assert client.get("/v2/health/live").status_code == 200
        banned = ("torch", "torchvision", "timm", "service.jobs")
        heavy = sorted(m for m in banned if m in sys.modules)
        print("imported:", heavy)
        sys.exit(1 if heavy else 0)
        """
    )
    env = {"SCANTUNE_ARTIFACT_URI": f"file://{tmp_path}", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
