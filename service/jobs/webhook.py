"""Signed webhooks on a job's terminal state: retried with backoff, never blocking the job.

Deliveries follow the Standard Webhooks convention (the `standardwebhooks` library): the
body is JSON, `webhook-id` names the event (the same on every retry, so a receiver can drop
duplicates), `webhook-timestamp` is the attempt's Unix time (a receiver refuses old ones:
no replays) and `webhook-signature` is `v1,<base64 HMAC-SHA256>` of `id.timestamp.body`.
Targets are checked and connected to by `service.jobs.egress` (no internal addresses, no
DNS rebinding, no redirects). Delivery is claimed in the store (pending → sending) so the
runner and the supervisors send each event once.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

from service.config import TrainingSettings
from service.jobs.egress import TargetRefused, check_target, post
from service.jobs.schemas import JobView
from service.jobs.store import JobStore

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "webhook-signature"
_NOT_RETRIED = {400, 401, 403, 404, 405, 410, 413, 415, 422}


@dataclass(frozen=True)
class Delivery:
    delivered: bool
    attempts: int
    last_error: str | None
    status_code: int | None = None


def signer(secret: str) -> Webhook:
    """`whsec_<base64>` as Standard Webhooks secrets are written, else the string's bytes."""
    return Webhook(secret if secret.startswith("whsec_") else secret.encode())


def signed_headers(secret: str, msg_id: str, body: bytes) -> dict[str, str]:
    now = datetime.now(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        SIGNATURE_HEADER: signer(secret).sign(msg_id, now, body),
    }


def verify(body: bytes, headers: dict[str, str], secret: str) -> bool:
    """What a receiver does (with any Standard Webhooks library): signature and freshness."""
    try:
        signer(secret).verify(body, headers, json_parse=False)
    except WebhookVerificationError:
        return False
    return True


def deliver(
    url: str,
    payload: dict[str, Any],
    *,
    secret: str | None,
    retries: int,
    backoff_s: float,
    timeout_s: float,
    allowed_hosts: list[str] | None = None,
    msg_id: str = "",
    extra_ca_pem: str | None = None,
) -> Delivery:
    """POST `payload`, retrying network errors, 5xx, 408 and 429 up to `retries` times.

    The recorded error says only "delivery failed (status N)" or "(no answer)": never the
    receiver's body or the network error, which would tell a caller what listens where."""
    body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    base = {"Content-Type": "application/json", "User-Agent": "scantune-webhook/1"}
    error: str | None = None
    code: int | None = None
    for attempt in range(1, retries + 2):
        try:
            target = check_target(url, allowed_hosts or [])  # again: DNS may have changed
            signature = signed_headers(secret, msg_id or url, body) if secret else {}
            code = post(target, body, {**base, **signature}, timeout_s, extra_ca_pem)
            if 200 <= code < 300:
                return Delivery(True, attempt, None, code)
            error = f"delivery failed (status {code})"
            if code in _NOT_RETRIED or 300 <= code < 400:
                return Delivery(False, attempt, error, code)
        except TargetRefused as exc:
            return Delivery(False, attempt, f"delivery refused: {exc}", None)
        except Exception as exc:
            log.info("webhook attempt %d: %s", attempt, type(exc).__name__)
            error, code = "delivery failed (no answer)", None
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
            allowed_hosts=settings.webhook_allowed_hosts,
            msg_id=f"{job_id}.{job.status}",
            extra_ca_pem=settings.webhook_ca_pem,
        )
    except Exception:  # never let a webhook take the caller down
        log.exception("webhook for job %s crashed", job_id)
        outcome = Delivery(False, 0, "delivery failed (no answer)")
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
