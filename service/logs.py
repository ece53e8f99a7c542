"""Structured logs: one JSON object a line (python-json-logger) with timestamp, level,
logger and the request id, for the log pipeline; `SCANTUNE_LOG_FORMAT=text` for a person at
a terminal. The audit trail's records travel in the `audit` field of their lines.
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from service.config import CommonSettings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
JSON_FIELDS = ["asctime", "levelname", "name", "process", "request_id", "message"]
HANDLER_NAME = "scantune"
QUIET_LOGGERS = {
    "highdicom": logging.ERROR,  # info and warning lines quote the UIDs and values they copy
    "pydicom": logging.ERROR,
    "pynetdicom": logging.WARNING,  # debug lines dump the DIMSE messages, UIDs included
    "dicomweb_client": logging.WARNING,  # debug lines carry request headers and UIDs
}
"""Libraries whose lines would carry patient data or credentials, held at these levels
whatever the log level, in every service."""


class RequestIdFilter(logging.Filter):
    """Stamps each record with the id of the request being served ('-' outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = _current_request_id()
        return True


def _current_request_id() -> str:
    try:
        from flask import g, has_request_context
    except ImportError:  # pragma: no cover - flask is a core dependency
        return "-"
    return str(g.get("request_id", "-")) if has_request_context() else "-"


def formatter(kind: str) -> logging.Formatter:
    if kind == "text":
        return logging.Formatter(TEXT_FORMAT)
    return JsonFormatter(
        JSON_FIELDS,
        rename_fields={"asctime": "timestamp", "levelname": "level", "name": "logger"},
        datefmt="%Y-%m-%dT%H:%M:%S%z",
    )


def configure_logging(settings: CommonSettings, *, stream: object = None) -> None:
    """Route every logger through one handler in the chosen format (replacing the one an
    earlier call installed; handlers others added, such as pytest's, stay)."""
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    kind = settings.log_format
    if kind == "auto":
        kind = "text" if getattr(handler.stream, "isatty", lambda: False)() else "json"
    handler.setFormatter(formatter(kind))
    handler.addFilter(RequestIdFilter())
    handler.set_name(HANDLER_NAME)
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == HANDLER_NAME:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
