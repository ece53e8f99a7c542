"""The README's configuration reference stays in step with the settings classes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.config import DicomNodeSettings, InferenceSettings, TrainingSettings

README = Path(__file__).resolve().parent.parent / "README.md"


def documented_variables() -> set[str]:
    return set(re.findall(r"`(SCANTUNE_[A-Z0-9_]+)`", README.read_text()))


@pytest.mark.parametrize("settings", [TrainingSettings, InferenceSettings, DicomNodeSettings])
def test_every_setting_is_in_the_readme(settings):
    expected = {f"SCANTUNE_{name.upper()}" for name in settings.model_fields}
    missing = expected - documented_variables()
    assert not missing, f"README.md does not document {sorted(missing)}"


def test_the_readme_documents_no_setting_that_does_not_exist():
    known = {
        f"SCANTUNE_{n.upper()}"
        for s in (TrainingSettings, InferenceSettings, DicomNodeSettings)
        for n in s.model_fields
    }
    # Variables the CLI and tests read directly, not settings of a service.
    extra = {
        "SCANTUNE_URL",
        "SCANTUNE_INFERENCE_URL",
        "SCANTUNE_API_KEY",
        "SCANTUNE_TEST_POSTGRES_URL",
        "SCANTUNE_TEST_DATA_DIR",
    }
    stale = documented_variables() - known - extra
    assert not stale, f"README.md documents settings that do not exist: {sorted(stale)}"
