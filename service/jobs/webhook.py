"""Signed webhooks on a job's terminal state: retried with backoff, never blocking the job.

The body is JSON; `X-Scantune-Signature: sha256=<hex>` is the HMAC-SHA256 of the exact body
bytes with `webhook_secret`, so a receiver verifies it before parsing. Delivery is claimed in
the store (pending → sending) so the runner and the supervisors send each event once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests

from service.config import TrainingSettings
from service.jobs.schemas import JobView
from service.jobs.store import JobStore

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Scantune-Signature"
_NOT_RETRIED = {400, 401, 403, 404, 405, 410, 413, 415, 422}


def host_allowed(url: str, allowed: list[str] | None) -> bool:
    """Whether a webhook URL's host is one `allowed` names (None: any host)."""
    if allowed is None:
        return True
    host = (urlsplit(url).hostname or "").lower()
    return host in {h.lower() for h in allowed}


@dataclass(frozen=True)
class Delivery:
    delivered: bool
    attempts: int
    last_error: str | None
    status_code: int | None = None


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, signature: str, secret: str) -> bool:
    """What a receiver does: constant-time comparison of the header with our own signature."""
    return hmac.compare_digest(sign(body, secret), signature)


def deliver(
    url: str,
    payload: dict[str, Any],
    *,
    secret: str | None,
    retries: int,
    backoff_s: float,
    timeout_s: float,
) -> Delivery:
    """POST `payload`, retrying network errors, 5xx, 408 and 429 up to `retries` times."""
    body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "scantune-webhook/1"}
    if secret:
        headers[SIGNATURE_HEADER] = sign(body, secret)
    error: str | None = None
    code: int | None = None
    for attempt in range(1, retries + 2):
        try:
            # Redirects are not followed: they could lead past the allowed hosts.
            response = requests.post(
                url, data=body, headers=headers, timeout=timeout_s, allow_redirects=False
            )
            code = response.status_code
            if 200 <= code < 300:
                return Delivery(True, attempt, None, code)
            error = f"HTTP {code} from receiver"
            if code in _NOT_RETRIED or 300 <= code < 400:
                return Delivery(False, attempt, error, code)
        except requests.RequestException as exc:
            error = f"{type(exc).__name__}: {str(exc)[:200]}"
        if attempt <= retries:
            time.sleep(backoff_s * 2 ** (attempt - 1))
    return Delivery(False, retries + 1, error, code)


def claim_timeout_s(settings: TrainingSettings) -> float:
    """Longest a live sender can take over one delivery (all tries and backoffs) plus slack."""
    tries = settings.webhook_retries + 1
    backoff = settings.webhook_backoff_s * (2**settings.webhook_retries - 1)
    return tries * settings.webhook_timeout_s + backoff + 60.0


def send_job_webhook(store: JobStore, job_id: str, settings: TrainingSettings) -> bool:
    """Deliver a finished job's webhook if nobody has claimed it; records the outcome."""
    if not store.claim_webhook(job_id, stale_after_s=claim_timeout_s(settings)):
        return False
    job = store.get(job_id)
    url = (job.spec.get("webhook") or {}).get("url")
    if not url:
        store.set_fields(job_id, webhook_state="failed", webhook={"last_error": "no url"})
        return False
    if not host_allowed(url, settings.webhook_allowed_hosts):  # the setting changed since
        store.set_fields(
            job_id,
            webhook_state="failed",
            webhook={"attempts": 0, "last_error": "host not in SCANTUNE_WEBHOOK_ALLOWED_HOSTS"},
        )
        return False
    view = JobView.from_row(job).model_dump(mode="json")
    payload = {"event": f"training_job.{job.status}", "job": view}
    try:
        outcome = deliver(
            url,
            payload,
            secret=settings.webhook_secret,
            retries=settings.webhook_retries,
            backoff_s=settings.webhook_backoff_s,
            timeout_s=settings.webhook_timeout_s,
        )
    except Exception as exc:  # never let a webhook take the caller down
        log.exception("webhook for job %s crashed", job_id)
        outcome = Delivery(False, 0, f"{type(exc).__name__}: {exc}")
    store.set_fields(
        job_id,
        webhook_state="delivered" if outcome.delivered else "failed",
        webhook={
            "attempts": outcome.attempts,
            "last_error": outcome.last_error,
            "status_code": outcome.status_code,
            "at": datetime.now(UTC).isoformat(),
        },
    )
    log.info(
        "webhook for job %s: %s after %d attempt(s)",
        job_id,
        "delivered" if outcome.delivered else f"failed ({outcome.last_error})",
        outcome.attempts,
    )
    return outcome.delivered
