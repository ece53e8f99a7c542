"""How `models.scans` is cut: no import cycle, leaf errors and limits, and nothing started or
changed by importing it (the helper pool and GDCM's exclusion wait for `configure`)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "models" / "scans"


def _graph() -> dict[str, set[str]]:
    """models.scans module -> the models.scans modules it imports (function level included)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.glob("*.py"):
        name = "models.scans" if path.stem == "__init__" else f"models.scans.{path.stem}"
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "models.scans":
                    found.update(f"models.scans.{a.name}" for a in node.names)
                elif node.module.startswith("models.scans."):
                    found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("models.scans."))
        graph[name] = found - {name}
    return graph


def test_the_package_has_no_import_cycle() -> None:
    graph = _graph()
    assert graph["models.scans.errors"] == set() and graph["models.scans.limits"] == set()
    done: set[str] = set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, " -> ".join((*path, node))
        if node in done:
            return
        for child in graph.get(node, ()):
            if child != "models.scans":  # a submodule's own package runs first, never a cycle
                visit(child, (*path, node))
        done.add(node)

    for module in graph:
        visit(module, ())


def test_importing_it_starts_nothing_and_leaves_pydicom_alone() -> None:
    script = (
        "import os, sys, threading; import models.scans, models.scans.dicom;"
        " from models.scans import helper_pool;"
        " print(helper_pool._pool is None, 'gdcm' in sys.modules, threading.active_count())"
    )
    found = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert found.stdout.split() == ["True", "False", "1"]


def test_configure_sizes_the_one_pool() -> None:
    script = (
        "import sys; from models import scans; from models.scans import helper_pool;"
        " scans.configure(decoders=3); first = helper_pool.pool();"
        " scans.configure(decoders=2); print(first is helper_pool.pool(), first.size,"
        " sys.modules.get('gdcm', 'absent'))"
    )
    found = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert found.stdout.split() == ["True", "2", "None"]
