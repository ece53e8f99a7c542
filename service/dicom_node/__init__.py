"""The DICOM node: a Storage SCP and STOW-RS endpoint that queues series durably, has them
classified by the inference service, and sends the structured reports back to the PACS.

`scantune serve dicom` runs `create_app()` under gunicorn in one worker: the app serves
STOW-RS, /healthz, /readyz and /metrics, and starts the SCP and the queue worker beside it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from service.config import DicomNodeSettings


def create_app(settings: DicomNodeSettings | None = None, *, start: bool = True) -> Flask:
    """The node's HTTP app; with `start`, the SCP and the queue worker run beside it."""
    from service.dicom_node.app import build

    return build(settings, start=start)
