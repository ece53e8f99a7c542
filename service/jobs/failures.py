"""How a job's failure reads on its row: a stable reason and a one-line detail, never a trace."""

from __future__ import annotations

DETAIL_CHARS = 400
FAILURE_REASONS = {
    "DataError": "data_error",
    "UriError": "data_error",
    "ImageDecodeError": "data_error",
    "WeightsError": "weights_error",
    "OutOfMemoryError": "out_of_memory",
    "MemoryError": "out_of_memory",
    "StoreError": "store_error",
    "PublishFailed": "publish_failed",
    "Unprocessable": "not_allowed",
    "Forbidden": "not_allowed",
}


def failure_reason(exc: BaseException) -> str:
    """A stable reason for the job row, from the exception's class (or its bases)."""
    if type(exc).__name__ == "ExportError":
        text = str(exc).lower()
        return "parity_failed" if "parity" in text or "differs" in text else "export_failed"
    for cls in type(exc).__mro__:
        if cls.__name__ in FAILURE_REASONS:
            return FAILURE_REASONS[cls.__name__]
    return "runner_crashed"


def short_detail(exc: BaseException) -> str:
    """One line for the API: the exception's message with its lines joined, cut short."""
    if isinstance(exc, PublishFailed):
        return f"publishing failed: {exc}"[:DETAIL_CHARS]
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    detail = f"{type(exc).__name__}: {text}"
    return detail if len(detail) <= DETAIL_CHARS else detail[: DETAIL_CHARS - 1] + "…"


class PublishFailed(RuntimeError):
    """The version could not be written to the artifact store (its number is given back)."""


class OwnershipLost(RuntimeError):
    """The job was cancelled, or the supervisor gave it to a newer attempt."""
