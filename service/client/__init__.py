"""A Python client for the scantune services, for other services, notebooks and the CLI.

    from service.client import Client
    api = Client("http://127.0.0.1:8000", api_key="...", inference_url="http://127.0.0.1:8001")
    job = api.wait(api.submit_job(spec)["id"])
    api.download("chest-xray", job["artifacts"]["version"], "model/")
    print(api.predict("chest-xray", ["scan.png"])["predictions"][0]["label"])

Built on `requests`; every refused request raises `ApiError` with the HTTP status and the RFC
9457 problem the service sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:  # imported where used: the CLI's `scantune serve` starts without requests
    import requests

JSON = dict[str, Any]
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
AUDIT_PAGE = 500  # the audit trail's largest page


class ApiError(Exception):
    """The API refused a request (`status` set, `problem` its body) or could not be reached."""

    def __init__(self, message: str, status: int | None = None, problem: JSON | None = None):
        super().__init__(message)
        self.status = status
        self.problem = problem or {}


class Client:
    """The training API (`url`) and, for `predict`, the inference API (`inference_url`)."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        inference_url: str | None = None,
        timeout: float = 30.0,
        service: str = "training",
        retries: int = 3,
        longest_wait_s: float = 30.0,
    ) -> None:
        """`retries`: how many times a request is sent again after a failed connection, a
        429 or a 503, and, one that only reads, a proxy's 502 or 504 (`service.client.retries`);
        each waits what the service's Retry-After says, up to `longest_wait_s`, beyond which
        the 429 is raised at once."""
        self.url = url.rstrip("/")
        self.inference_url = inference_url.rstrip("/") if inference_url else None
        self.timeout = timeout
        self.service = service
        import requests
        from requests.adapters import HTTPAdapter

        from service.client.retries import policy

        self.session = requests.Session()
        adapter = HTTPAdapter(max_retries=policy(retries, longest_wait_s))
        for scheme in ("http://", "https://"):
            self.session.mount(scheme, adapter)
        self.session.headers["Accept"] = "application/json"
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"

    # transport
    def request(self, method: str, path: str, *, base: str | None = None, **kwargs: Any) -> Any:
        """One request; ApiError for a problem response or an unreachable service."""
        import requests

        root = base or self.url
        kwargs.setdefault("timeout", self.timeout)
        try:
            response = self.session.request(method, f"{root}{path}", **kwargs)
        except requests.RequestException as exc:
            raise ApiError(f"cannot reach the {self.service} API at {root}: {exc}") from None
        if response.status_code >= 400:
            raise ApiError(describe_problem(response), response.status_code, _problem(response))
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    # jobs
    def submit_job(self, spec: JSON, *, idempotency_key: str | None = None) -> JSON:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        found: JSON = self.json("POST", "/v1/training-jobs", json=spec, headers=headers)
        return found

    def check_job(self, spec: JSON) -> JSON:
        """What a submit of `spec` would be refused for, raised as ApiError, with nothing
        queued; else the spec as the job would store it (`JobCheck`)."""
        found: JSON = self.json("POST", "/v1/training-jobs", json=spec, params={"dry_run": "true"})
        return found

    def job(self, job_id: str) -> JSON:
        found: JSON = self.json("GET", f"/v1/training-jobs/{_seg(job_id)}")
        return found

    def jobs(
        self, *, status: str | None = None, model: str | None = None, limit: int = 50
    ) -> list[JSON]:
        params = {k: v for k, v in {"status": status, "model": model, "limit": limit}.items() if v}
        items: list[JSON] = self.json("GET", "/v1/training-jobs", params=params)["items"]
        return items

    def cancel_job(self, job_id: str) -> JSON:
        found: JSON = self.json("POST", f"/v1/training-jobs/{_seg(job_id)}/cancel")
        return found

    def job_logs(self, job_id: str, *, tail: int | None = None) -> str:
        params = {"tail": tail} if tail else {}
        text: str = self.request(
            "GET", f"/v1/training-jobs/{_seg(job_id)}/logs", params=params
        ).text
        return text

    def job_metrics(self, job_id: str) -> JSON:
        found: JSON = self.json("GET", f"/v1/training-jobs/{_seg(job_id)}/metrics")
        return found

    def wait(
        self,
        job_id: str,
        *,
        poll_interval: float = 2.0,
        timeout: float | None = None,
        on_update: Callable[[JSON], None] | None = None,
    ) -> JSON:
        """Poll until the job ends (TimeoutError after `timeout` s); `on_update` sees each poll."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if on_update is not None:
                on_update(job)
            if job["status"] in TERMINAL:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job['status']} after {timeout:g}s")
            time.sleep(poll_interval)

    # models
    def models(self) -> list[JSON]:
        items: list[JSON] = self.json("GET", "/v1/models")["items"]
        return items

    def versions(self, name: str, *, newest_first: bool = False, limit: int = 100) -> list[JSON]:
        params = {"order": "newest" if newest_first else "oldest", "limit": limit}
        items: list[JSON] = self.json("GET", f"/v1/models/{_seg(name)}/versions", params=params)[
            "items"
        ]
        return items

    def version(self, name: str, version: int) -> JSON:
        found: JSON = self.json("GET", f"/v1/models/{_seg(name)}/versions/{int(version)}")
        return found

    def evaluation(self, name: str, version: int) -> JSON:
        found: JSON = self.json(
            "GET", f"/v1/models/{_seg(name)}/versions/{int(version)}/evaluation"
        )
        return found

    def set_alias(self, name: str, alias: str, version: int) -> JSON:
        path = f"/v1/models/{_seg(name)}/aliases/{_seg(alias)}"
        found: JSON = self.json("PUT", path, json={"version": int(version)})
        return found

    def files(self, name: str, version: int) -> list[str]:
        items: list[str] = self.json(
            "GET", f"/v1/models/{_seg(name)}/versions/{int(version)}/files"
        )["items"]
        return items

    def download(
        self, name: str, version: int, dest: str | Path, *, chunk: int = 1 << 16
    ) -> list[Path]:
        """Every file of the version into `dest` (plots/ kept as a sub-folder), streamed."""
        out, written = Path(dest), []
        for file in self.files(name, version):
            target = (out / file).resolve()
            if out.resolve() not in target.parents:  # a name the service should never send
                raise ApiError(f"refusing to write {file!r} outside {out}")
            target.parent.mkdir(parents=True, exist_ok=True)
            path = f"/v1/models/{_seg(name)}/versions/{int(version)}/files/{_seg(file)}"
            response = self.request("GET", path, stream=True)
            partial = target.with_name(f".{target.name}.part")
            with partial.open("wb") as fh:
                for block in response.iter_content(chunk):
                    fh.write(block)
            partial.replace(target)
            written.append(target)
        return written

    def report_outcomes(self, name: str, version: int, outcomes: Iterable[JSON]) -> JSON:
        """Confirmed diagnoses for scans the version classified: each `{"reference", "label",
        "probabilities"}` (at most 1,000 a call, kept whole or refused whole)."""
        path = f"/v1/models/{_seg(name)}/versions/{int(version)}/outcomes"
        found: JSON = self.json("POST", path, json={"outcomes": list(outcomes)})
        return found

    def retract_outcomes(self, name: str, version: int, references: Iterable[str]) -> JSON:
        """Delete this client's reports of these scans (its own references, at most 1,000 a
        call): their diagnosis was withdrawn. Says how many were `retracted` and `unknown`."""
        path = f"/v1/models/{_seg(name)}/versions/{int(version)}/outcomes/retract"
        found: JSON = self.json("POST", path, json={"references": list(references)})
        return found

    def outcomes(
        self,
        name: str,
        version: int,
        *,
        since: str | None = None,
        until: str | None = None,
        client: str | None = None,
    ) -> JSON:
        """How the version does on the reported outcomes, beside its card's figures; those
        reported in [`since`, `until`) (ISO 8601 times) when given; one `client`'s."""
        asked = (("since", since), ("until", until), ("client", client))
        window = {k: v for k, v in asked if v}
        path = f"/v1/models/{_seg(name)}/versions/{int(version)}/outcomes"
        found: JSON = self.json("GET", path, params=window)
        return found

    def outcome_trend(
        self,
        name: str,
        version: int,
        *,
        bucket: str = "week",
        since: str | None = None,
        until: str | None = None,
    ) -> JSON:
        """The version's outcomes period by period (`bucket` week or month): each period's
        reports, accuracy, sensitivity and specificity with 95% intervals, oldest first."""
        params = {"bucket": bucket, **{k: v for k, v in (("since", since), ("until", until)) if v}}
        path = f"/v1/models/{_seg(name)}/versions/{int(version)}/outcomes/trend"
        found: JSON = self.json("GET", path, params=params)
        return found

    def outcomes_by_client(
        self, name: str, version: int, *, since: str | None = None, until: str | None = None
    ) -> JSON:
        """Each client's figures on its own reports (the version's owner and admin keys)."""
        window = {k: v for k, v in (("since", since), ("until", until)) if v}
        path = f"/v1/models/{_seg(name)}/versions/{int(version)}/outcomes/clients"
        found: JSON = self.json("GET", path, params=window)
        return found

    def audit(self, *, limit: int | None = 100, **filters: str) -> Iterator[JSON]:
        """The audit trail (an admin key), newest first: `limit` records (None: all) of those
        `filters` match (`client`, `action`, `since`, `until`), fetched page by page."""
        cursor: str | None = None
        while limit is None or limit > 0:
            size = AUDIT_PAGE if limit is None else min(limit, AUDIT_PAGE)
            params = {**filters, "limit": size, **({"cursor": cursor} if cursor else {})}
            page: JSON = self.json("GET", "/v1/audit", params=params)
            yield from page["items"]
            limit = None if limit is None else limit - len(page["items"])
            cursor = page["next_cursor"]
            if not cursor:
                return

    def caveats(self, name: str, version: int) -> list[JSON]:
        """What to keep in mind about the version: `{code, text}` each, gravest first (a
        pipeline may refuse to promote on a code, e.g. `few_scans`)."""
        path = f"/v1/models/{_seg(name)}/versions/{int(version)}/caveats"
        found: list[JSON] = self.json("GET", path)["caveats"]
        return found

    def compare(self, name: str, version: int, against: int | str = "production") -> JSON:
        """The version beside another (a number or an alias): each figure and its difference,
        the intervals, `same_scans` (were both measured on the same held-out scans), the
        settings that changed and each one's caveats."""
        path = f"/v1/models/{_seg(name)}/versions/{int(version)}/comparison"
        found: JSON = self.json("GET", path, params={"against": str(against)})
        return found

    def notes(self, name: str, version: int) -> JSON:
        """The team's words on the version in force: `notes`, their `source` (amended, card or
        none), and who amended them when."""
        found: JSON = self.json("GET", f"/v1/models/{_seg(name)}/versions/{int(version)}/notes")
        return found

    def set_notes(self, name: str, version: int, notes: JSON) -> JSON:
        """Replace the version's notes, all of them (`purpose`, `limitations`, `contact`): its
        owner's or an admin's call. Answers the notes now in force."""
        path = f"/v1/models/{_seg(name)}/versions/{int(version)}/notes"
        found: JSON = self.json("PUT", path, json=notes)
        return found

    # inference
    def predict(
        self,
        model: str,
        files: Iterable[str | Path],
        *,
        version: int | None = None,
        alias: str | None = None,
        explain: bool = False,
    ) -> JSON:
        """Classify scans (PNG, JPEG, DICOM) with the inference service."""
        found: JSON = self._predict(model, files, version, alias, explain).json()
        return found

    def predict_dicom(
        self,
        model: str,
        files: Iterable[str | Path],
        *,
        version: int | None = None,
        alias: str | None = None,
        explain: bool = False,
    ) -> list[bytes]:
        """The DICOM answer of DICOM scans of one study: the SR's file, then with `explain`
        each scan under its attention map (a Secondary Capture), as Part 10 bytes."""
        from service.hospital.multipart import MULTIPART_DICOM, dicom_parts

        answer = self._predict(model, files, version, alias, explain, accept=MULTIPART_DICOM)
        return dicom_parts(answer.headers["Content-Type"], answer.content)

    def _predict(
        self,
        model: str,
        files: Iterable[str | Path],
        version: int | None,
        alias: str | None,
        explain: bool,
        accept: str = "application/json",
    ) -> Any:
        base = self.inference_url or self.url
        params: dict[str, Any] = {"explain": "true"} if explain else {}
        if version is not None:
            params["version"] = version
        if alias is not None:
            params["alias"] = alias
        parts = [("file", (Path(f).name, Path(f).read_bytes())) for f in files]
        path = f"/v1/models/{_seg(model)}:predict"
        return self.request(
            "POST", path, base=base, params=params, files=parts, headers={"Accept": accept}
        )


def _seg(value: str) -> str:
    return quote(str(value), safe="")


def _problem(response: requests.Response) -> JSON:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def describe_problem(response: requests.Response) -> str:
    """'HTTP 422 Validation failed: ...' plus one line per field error, from a problem body."""
    problem = _problem(response)
    if not problem:
        return f"HTTP {response.status_code}: {response.text[:500]}"
    lines = [f"HTTP {response.status_code} {problem.get('title', '')}: {problem.get('detail', '')}"]
    lines += [f"  {e.get('loc')}: {e.get('msg')}" for e in problem.get("errors") or []]
    return "\n".join(lines)


__all__ = ["ApiError", "Client", "describe_problem"]
