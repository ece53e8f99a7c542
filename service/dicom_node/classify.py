"""Classification over HTTP: the node posts a series' instance files to the inference service.

Why over HTTP rather than in-process: one code path classifies every scan, with its API-key
auth, limits, metrics and audit; the node stays light (no onnxruntime, no model cache) and
scales apart from inference, which may run on GPU nodes. The node holds an API key of its own
(scopes `predict` and `read`: it reads the model's card for the report's class codes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

BATCH = 32
"""Scans per predict request: under the inference service's default `max_files` (64)."""


class Unavailable(Exception):
    """Inference cannot answer now (down, overloaded, 5xx): try again later."""


class Rejected(Exception):
    """Inference refused the series (4xx: unknown model, wrong modality...): trying again
    would not help."""


@dataclass(frozen=True)
class Classification:
    predictions: list[dict[str, Any]]  # one v1 prediction per instance, in order
    model: dict[str, Any]  # name, version, sha256 (and alias) as the answer gives them
    card: dict[str, Any]  # the model card of that version


class InferenceClient:
    def __init__(self, url: str, api_key: str | None, timeout_s: float) -> None:
        self.url, self.timeout_s = url.rstrip("/"), timeout_s
        self.session = requests.Session()
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"

    def classify(
        self, model: str, alias: str | None, files: Sequence[bytes], *, explain: bool = False
    ) -> Classification:
        """Every file classified by one model version (the first answer pins the version);
        with `explain`, each prediction has its class activation map (`explanation`), unless
        the model has none (its predictions then come without)."""
        predictions: list[dict[str, Any]] = []
        info: dict[str, Any] = {}
        for start in range(0, len(files), BATCH):
            query = {"version": info["version"]} if info else ({"alias": alias} if alias else {})
            batch = files[start : start + BATCH]
            try:
                answer = self._predict(model, query, batch, start, explain)
            except Rejected:
                if not explain:
                    raise
                explain = False  # e.g. a model without a CAM output: asked again without
                answer = self._predict(model, query, batch, start, explain)
            info = info or answer["model"]
            predictions.extend(answer["predictions"])
        if len(predictions) != len(files):
            raise Rejected(f"{len(predictions)} predictions for {len(files)} scans")
        card = self._call("GET", f"/v1/models/{quote(model)}", params={"version": info["version"]})
        return Classification(predictions, info, card["serving"]["card"])

    def _predict(
        self, model: str, query: dict[str, Any], batch: Sequence[bytes], start: int, explain: bool
    ) -> dict[str, Any]:
        return self._call(
            "POST",
            f"/v1/models/{quote(model)}:predict",
            params={**query, "explain": "true"} if explain else query,
            files=[("file", (f"{start + i}.dcm", data, "application/dicom"))
                   for i, data in enumerate(batch)],
        )  # fmt: skip

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self.session.request(
                method, self.url + path, timeout=self.timeout_s, **kwargs
            )
        except requests.RequestException as exc:
            raise Unavailable(f"inference unreachable ({type(exc).__name__})") from None
        if response.status_code >= 500 or response.status_code in (408, 429):
            raise Unavailable(f"inference answered {response.status_code}")
        if response.status_code >= 400:
            raise Rejected(f"inference answered {response.status_code}: {_title(response)}")
        body: dict[str, Any] = response.json()
        return body


def _title(response: requests.Response) -> str:
    """The problem's title (never its detail, which may name a file); for a withdrawn version
    (410) its detail, which names the model and why it was withdrawn, and nothing of a scan."""
    try:
        problem = response.json()
    except ValueError:
        return ""
    if response.status_code == 410:
        return str(problem.get("detail", ""))[:255]
    return str(problem.get("title", ""))[:80]
