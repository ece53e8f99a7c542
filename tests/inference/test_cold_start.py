"""Cold start: a worker starts loading its models before it imports Flask and the views.

onnxruntime builds a session without holding the GIL, so the model loads while the web side
is still importing; that only works while `service.inference` and the model manager stay
importable without Flask.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_model_manager_imports_without_flask(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        import service.inference
        import service.inference.manager
        print("imported:", sorted(m for m in ("flask", "werkzeug") if m in sys.modules))
        """
    )
    env = {"SCANTUNE_ARTIFACT_URI": f"file://{tmp_path}", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported: []"
