"""The chart's hospital values reach the inference settings; left empty, the defaults hold."""

from __future__ import annotations

from typing import Any

import pytest

from service.config import InferenceSettings
from service.hospital.results import DEFAULT_DISCLAIMER
from tests.deploy.test_chart import MINIMAL, container_env, deployment, settings_from


def _settings(render: Any, monkeypatch: pytest.MonkeyPatch, hospital: dict[str, Any]) -> Any:
    values = {**MINIMAL, "inference": {**MINIMAL.get("inference", {}), "hospital": hospital}}
    manifests = render(values)
    container = deployment(manifests, "inference")["spec"]["template"]["spec"]["containers"][0]
    return settings_from(monkeypatch, container_env(manifests, container), InferenceSettings)


def test_hospital_values_become_settings(render: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    hospital = {
        "dicomUidRoot": "1.2.826.0.1.3680043",
        "dicomwebUrl": "https://pacs.example.org/dicom-web",
        "dicomwebTimeoutS": 4,
    }
    settings = _settings(render, monkeypatch, hospital)
    assert settings.dicom_uid_root == "1.2.826.0.1.3680043"
    assert settings.dicomweb_url == "https://pacs.example.org/dicom-web"
    assert settings.dicomweb_timeout_s == 4
    assert settings.result_disclaimer == DEFAULT_DISCLAIMER


def test_empty_values_keep_the_safe_defaults(render: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(render, monkeypatch, {"resultDisclaimer": "", "dicomwebUrl": ""})
    assert settings.result_disclaimer == DEFAULT_DISCLAIMER
    assert settings.dicomweb_url is None and settings.dicom_uid_root is None
