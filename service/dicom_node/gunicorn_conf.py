"""gunicorn configuration of the DICOM node (`scantune serve dicom`).

The master checks the settings before it forks (one line naming a bad variable), and refuses
more than one worker: the worker owns the DICOM port and the queue worker thread.
"""

from __future__ import annotations

from typing import Any


def on_starting(server: Any) -> None:
    from service.config import DicomNodeSettings, settings_or_exit

    settings_or_exit(DicomNodeSettings, server.log, "dicom")
    if server.cfg.workers != 1:
        server.log.error("scantune dicom: runs one worker (it owns the DICOM port)")
        raise SystemExit(2)
