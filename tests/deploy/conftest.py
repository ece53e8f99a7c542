"""Fixtures for the deployment files: the Helm chart rendered offline, and the Dockerfile."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "scantune"
RELEASE = "rel"
NAMESPACE = "scantune"

Manifest = dict[str, Any]


def _helm() -> Any:
    """helm-python-sdk (Helm v4's engine through ctypes), or a skip that says why not."""
    try:
        import helm_python
    except ImportError as exc:  # the dev extra pins it; say how to get it
        pytest.skip(f"helm-python-sdk is not installed ({exc}); pip install helm-python-sdk")
    except OSError as exc:  # the bundled libhelm_c.so cannot load on this platform
        pytest.skip(f"helm-python-sdk's native library cannot load here: {exc}")
    return helm_python


@pytest.fixture(scope="session")
def helm() -> Any:
    return _helm()


@pytest.fixture(scope="session")
def render(helm: Any) -> Callable[[dict[str, Any]], list[Manifest]]:
    """Render the chart with `values` and return its manifests (NOTES.txt left out)."""
    chart = helm.Chart.load(CHART)

    def _render(values: dict[str, Any]) -> list[Manifest]:
        files = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        manifests: list[Manifest] = []
        for path, text in sorted(files.items()):
            if path.endswith("NOTES.txt"):
                continue
            manifests.extend(doc for doc in yaml.safe_load_all(text) if doc)
        return manifests

    return _render


@pytest.fixture(scope="session")
def notes(helm: Any) -> Callable[[dict[str, Any]], str]:
    chart = helm.Chart.load(CHART)

    def _notes(values: dict[str, Any]) -> str:
        files = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        return next(text for path, text in files.items() if path.endswith("NOTES.txt"))

    return _notes
