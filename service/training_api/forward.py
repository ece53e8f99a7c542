"""Forwarding the dashboard's "Try a scan" uploads to the inference service, and its DICOM
page's requests to the DICOM node.

The training service relays the request instead of the browser calling the other service
itself: the page stays same-origin (its Content-Security-Policy keeps `connect-src 'self'`)
and neither service opens CORS. The user's own key goes along, so the service it reaches
decides what it may do; nothing is logged of the upload or of the series.
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


class NodeNotConfigured(ServiceUnavailable):
    title = "DICOM node not configured"


SERIES_QUERY = ("state", "study_instance_uid", "model", "version", "cursor", "limit")
RETRIEVE_TIMEOUT_S = 300.0


def relay(
    method: str, base_url: str, path: str, service: str, key: str | None, **request: Any
) -> Forwarded:
    """One request to another of the release's services with the user's own key (as a bearer
    token, however the user sent it); its answer, status and all (that service decides what
    the key may do). Unreachable: a 503 naming the service."""
    import requests

    headers = {"Accept": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    try:
        response = requests.request(method, f"{base_url}{path}", headers=headers, **request)
    except requests.RequestException as exc:
        raise ServiceUnavailable(
            f"the {service} at {base_url} cannot be reached ({type(exc).__name__})"
        ) from None
    content_type = response.headers.get("Content-Type", "application/json")
    return Forwarded(response.status_code, content_type, response.content)


class InferenceForwarder:
    def __init__(self, base_url: str | None, *, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/") if base_url else None
        self.timeout = timeout

    def predict(
        self,
        name: str,
        files: list[tuple[str, bytes, str]],
        *,
        key: str | None,
        query: dict[str, str],
    ) -> Forwarded:
        """POST the files to the inference service's predict; its answer, status and all."""
        if self.base_url is None:
            raise InferenceNotConfigured(
                "the training service has no SCANTUNE_INFERENCE_URL, so it cannot forward scans"
            )
        multipart: list[tuple[str, Any]] = [("file", f) for f in files]
        return relay(
            "POST",
            self.base_url,
            f"/v1/models/{name}:predict",
            "inference service",
            key,
            params={k: v for k, v in query.items() if k in FORWARDED_QUERY},
            files=multipart,
            timeout=self.timeout,
        )


class NodeForwarder:
    """The dashboard's DICOM page: the node's series, retrieval, recall and purge routes, with
    the user's own key (the node checks its scopes: series:read to list, admin to send now,
    to recall and to lift a recall, to purge a study and to release its block;
    series:retrieve to fetch a study)."""

    def __init__(self, base_url: str | None, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/") if base_url else None
        self.timeout = timeout

    def series(self, query: dict[str, str], *, key: str | None) -> Forwarded:
        params = {k: v for k, v in query.items() if k in SERIES_QUERY}
        return self._relay("GET", "/v1/series", key, params=params)

    def orders(self, query: dict[str, str], *, key: str | None) -> Forwarded:
        params = {k: v for k, v in query.items() if k in ("cursor", "limit")}
        return self._relay("GET", "/v1/orders", key, params=params)

    def outcome_reports(self, query: dict[str, str], *, key: str | None) -> Forwarded:
        params = {k: v for k, v in query.items() if k in ("state", "cursor", "limit")}
        return self._relay("GET", "/v1/outcome-reports", key, params=params)

    def exam_reports(self, query: dict[str, str], *, key: str | None) -> Forwarded:
        params = {k: v for k, v in query.items() if k in ("held", "cursor", "limit")}
        return self._relay("GET", "/v1/outcome-reports/exams", key, params=params)

    def send_now(self, series_id: int, *, key: str | None) -> Forwarded:
        return self._relay("POST", f"/v1/series/{series_id}/send-now", key)

    def retrieve(self, body: Any, *, key: str | None) -> Forwarded:
        """Have the node fetch a study from a PACS (the node validates the body); unless the
        body says `wait: false` (as the page does), the answer comes once the PACS has sent
        the study, so it may take minutes."""
        return self._relay("POST", "/v1/retrievals", key, json=body, timeout=RETRIEVE_TIMEOUT_S)

    def retrieval(self, retrieval_id: int, *, key: str | None) -> Forwarded:
        return self._relay("GET", f"/v1/retrievals/{retrieval_id}", key)

    def cancel_retrieval(self, retrieval_id: int, *, key: str | None) -> Forwarded:
        return self._relay("POST", f"/v1/retrievals/{retrieval_id}/cancel", key)

    def retrievals(self, query: dict[str, str], *, key: str | None) -> Forwarded:
        params = {k: v for k, v in query.items() if k in ("state", "cursor", "limit")}
        return self._relay("GET", "/v1/retrievals", key, params=params)

    def recall(self, body: Any, *, key: str | None) -> Forwarded:
        """Recall a model version's results at the node (it validates the body and checks the
        key for admin): 202 for a new recall, 200 with the first one when recalled before."""
        return self._relay("POST", "/v1/recalls", key, json=body)

    def recall_retry(self, recall_id: int, *, key: str | None) -> Forwarded:
        """Send a recall's refused withdrawals again (the node checks for admin)."""
        return self._relay("POST", f"/v1/recalls/{recall_id}/retry", key)

    def recall_lift(self, recall_id: int, body: Any, *, key: str | None) -> Forwarded:
        """Lift a recall: the version's later results go out again (the node validates the
        body and checks for admin)."""
        return self._relay("POST", f"/v1/recalls/{recall_id}/lift", key, json=body)

    def recalls(self, query: dict[str, str], *, key: str | None) -> Forwarded:
        params = {k: v for k, v in query.items() if k == "limit"}
        return self._relay("GET", "/v1/recalls", key, params=params)

    def recall_state(self, recall_id: int, *, key: str | None) -> Forwarded:
        """One recall, with the withdrawals not done (`open`)."""
        return self._relay("GET", f"/v1/recalls/{recall_id}", key)

    def purge(self, body: Any, *, key: str | None) -> Forwarded:
        """Purge a study sent by mistake (the node validates the body and checks for admin):
        202 with the purge, which names no study."""
        return self._relay("POST", "/v1/purges", key, json=body)

    def purge_release(self, purge_id: int, body: Any, *, key: str | None) -> Forwarded:
        """End the block of a study purged in error (the node validates the body and checks
        for admin; 409 when the purge blocks nothing)."""
        return self._relay("POST", f"/v1/purges/{purge_id}/release", key, json=body)

    def purges(self, query: dict[str, str], *, key: str | None) -> Forwarded:
        params = {k: v for k, v in query.items() if k == "limit"}
        return self._relay("GET", "/v1/purges", key, params=params)

    def _relay(self, method: str, path: str, key: str | None, **request: Any) -> Forwarded:
        if self.base_url is None:
            raise NodeNotConfigured(
                "the training service has no SCANTUNE_DICOM_NODE_URL, so it cannot show the"
                " DICOM node's series"
            )
        request.setdefault("timeout", self.timeout)
        return relay(method, self.base_url, path, "DICOM node", key, **request)
