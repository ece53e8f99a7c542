"""`scantune serve` is how the images start both services: it must exec gunicorn at once.

Every command module is imported to build the parser, so a module-level import of Flask,
pydantic, requests or PyYAML would put its import time (about half a second together) in
front of every service start. Commands import them where they run.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_building_the_cli_parser_imports_no_heavy_library() -> None:
    script = textwrap.dedent(
        """
        import sys
        from service.cli import build_parser
        args = build_parser().parse_args(["serve", "inference", "--port", "9"])
        assert args.func.__name__ == "run_serve", args
        banned = ("flask", "pydantic", "pydantic_settings", "requests", "yaml", "numpy",
                  "onnxruntime", "torch")
        print("imported:", sorted(m for m in banned if m in sys.modules))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported: []"


def test_the_cli_s_scope_names_are_the_settings_scopes() -> None:
    from service.config import SCOPES
    from service.scopes import SCOPE_NAMES

    assert SCOPE_NAMES == SCOPES
