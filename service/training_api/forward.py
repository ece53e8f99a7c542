"""Forwarding the dashboard's "Try a scan" uploads to the inference service.

The training service relays the request instead of the browser calling the inference service
itself: the page stays same-origin (its Content-Security-Policy keeps `connect-src 'self'`)
and the inference service opens no CORS. The user's own key goes along, so the inference
service decides what it may do; nothing is logged of the upload.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.errors import ServiceUnavailable

FORWARDED_QUERY = ("explain", "version", "alias", "top_k")


class InferenceNotConfigured(ServiceUnavailable):
    title = "Inference not configured"


@dataclass(frozen=True)
class Forwarded:
    status: int
    content_type: str
    body: bytes


class InferenceForwarder:
    def __init__(self, base_url: str | None, *, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/") if base_url else None
        self.timeout = timeout

    def predict(
        self,
        name: str,
        files: list[tuple[str, bytes, str]],
        *,
        authorization: str | None,
        query: dict[str, str],
    ) -> Forwarded:
        """POST the files to the inference service's predict; its answer, status and all."""
        import requests

        if self.base_url is None:
            raise InferenceNotConfigured(
                "the training service has no SCANTUNE_INFERENCE_URL, so it cannot forward scans"
            )
        headers = {"Accept": "application/json"}
        if authorization:
            headers["Authorization"] = authorization
        params = {k: v for k, v in query.items() if k in FORWARDED_QUERY}
        multipart: list[tuple[str, Any]] = [("file", f) for f in files]
        try:
            response = requests.post(
                f"{self.base_url}/v1/models/{name}:predict",
                params=params,
                files=multipart,
                headers=headers,
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            raise ServiceUnavailable(
                f"the inference service at {self.base_url} cannot be reached ({type(exc).__name__})"
            ) from None
        content_type = response.headers.get("Content-Type", "application/json")
        return Forwarded(response.status_code, content_type, response.content)
