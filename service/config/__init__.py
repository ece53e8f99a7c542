"""All settings, read from `SCANTUNE_*` environment variables, in one place.

One settings class per process: `TrainingSettings` for the training API and its job runners,
`InferenceSettings` for the inference service, `DicomNodeSettings` for the DICOM node. Each is
read once in `create_app` / `main` and passed down; nothing reads `os.environ` at import time.
"""

from __future__ import annotations

from service.config.common import (
    DEFAULT_VAR,
    SCOPES,
    ApiKey,
    CommonSettings,
    describe_settings_error,
    settings_or_exit,
)
from service.config.dicom_node import DicomNodeSettings
from service.config.inference import InferenceSettings
from service.config.training import TrainingSettings
from service.dicom_node.peers import DicomCaller, DicomDestination, DicomRoute

__all__ = [
    "DEFAULT_VAR",
    "SCOPES",
    "ApiKey",
    "CommonSettings",
    "DicomCaller",
    "DicomDestination",
    "DicomNodeSettings",
    "DicomRoute",
    "InferenceSettings",
    "TrainingSettings",
    "describe_settings_error",
    "settings_or_exit",
]
