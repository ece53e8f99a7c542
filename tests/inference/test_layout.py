"""How the inference package is cut: one module imports onnxruntime, and renamed settings
keep their old names working."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from service.config import InferenceSettings

PACKAGE = Path(__file__).resolve().parents[2] / "service" / "inference"


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_only_the_sessions_module_imports_onnxruntime() -> None:
    importers = sorted(p.name for p in PACKAGE.glob("*.py") if "onnxruntime" in _imports(p))
    assert importers == ["sessions.py"]


def test_the_old_runner_setting_name_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCANTUNE_ORT_LANES", "3")
    assert InferenceSettings().batch_runners == 3
    monkeypatch.setenv("SCANTUNE_BATCH_RUNNERS", "2")  # the new name wins
    assert InferenceSettings().batch_runners == 2
    monkeypatch.delenv("SCANTUNE_ORT_LANES")
    assert InferenceSettings().batch_runners == 2
    monkeypatch.delenv("SCANTUNE_BATCH_RUNNERS")
    assert InferenceSettings().batch_runners == 0
