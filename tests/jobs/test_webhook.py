"""Webhook delivery to a real loopback receiver: Standard Webhooks signatures, retries,
outcome on the job."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from models.spec import JobSpec
from service.config import TrainingSettings
from service.jobs.state import Status
from service.jobs.store import JobStore
from service.jobs.webhook import SIGNATURE_HEADER, deliver, send_job_webhook, signed_headers, verify
from tests.conftest import HospitalCA

LOOPBACK = ["127.0.0.1"]


def test_signature_follows_standard_webhooks() -> None:
    """Checked with the reference test vector of the Standard Webhooks specification."""
    from datetime import UTC, datetime

    from standardwebhooks import Webhook

    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    when = datetime.fromtimestamp(1614265330, UTC)
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert Webhook(secret).sign("msg_p5jXN8AQM9LWM0D4loKWxJek", when, body) == expected
    headers = signed_headers(secret, "msg_1", body)
    assert headers["webhook-id"] == "msg_1" and headers["webhook-timestamp"].isdigit()
    assert verify(body, headers, secret) and not verify(body + b" ", headers, secret)
    assert not verify(body, headers, "another-secret")


def test_an_old_delivery_cannot_be_replayed() -> None:
    headers = signed_headers("k", "msg_1", b"{}")
    headers["webhook-timestamp"] = str(int(headers["webhook-timestamp"]) - 3600)
    assert not verify(b"{}", headers, "k")


def test_retries_5xx_then_delivers_signed(receiver: Callable[..., Any]) -> None:
    hook = receiver([500, 503, 200])
    outcome = deliver(
        hook.url, {"a": 1}, secret="k", retries=3, backoff_s=0.01, timeout_s=5,
        allowed_hosts=LOOPBACK, msg_id="job-1.succeeded",
    )  # fmt: skip
    assert (outcome.delivered, outcome.attempts, outcome.status_code) == (True, 3, 200)
    assert len(hook.requests) == 3
    bodies = {body for _, body in hook.requests}
    assert len(bodies) == 1  # every retry carries the same signed bytes
    headers, body = hook.requests[-1]
    assert json.loads(body) == {"a": 1}
    assert verify(body, headers, "k")
    assert {h["webhook-id"] for h, _ in hook.requests} == {"job-1.succeeded"}  # one event


def test_gives_up_after_retries_and_does_not_retry_4xx(receiver: Callable[..., Any]) -> None:
    hook = receiver([500, 500, 500])
    outcome = deliver(
        hook.url, {}, secret=None, retries=2, backoff_s=0.01, timeout_s=5, allowed_hosts=LOOPBACK
    )
    assert (outcome.delivered, outcome.attempts) == (False, 3)
    assert outcome.last_error == "delivery failed (status 500)"
    assert SIGNATURE_HEADER not in {k.lower() for k in hook.requests[0][0]}
    gone = receiver([404])
    outcome = deliver(
        gone.url, {}, secret="k", retries=5, backoff_s=0.01, timeout_s=5, allowed_hosts=LOOPBACK
    )
    assert (outcome.delivered, outcome.attempts, len(gone.requests)) == (False, 1, 1)


def test_unreachable_receiver_is_recorded_on_the_job(
    store: JobStore,
    make_spec: Callable[..., JobSpec],
    settings_env: Callable[..., TrainingSettings],
) -> None:
    settings = settings_env(webhook_retries=1, webhook_backoff_s=0.01, webhook_timeout_s=1)
    row, _ = store.create(make_spec(webhook={"url": "http://127.0.0.1:9/hook"}))
    assert not send_job_webhook(store, row.id, settings)  # not terminal yet: nothing sent
    store.cancel(row.id)
    assert not send_job_webhook(store, row.id, settings)
    job = store.get(row.id)
    assert job.webhook_state == "failed"
    assert job.webhook is not None and job.webhook["attempts"] == 2
    assert job.webhook["last_error"] == "delivery failed (no answer)"  # not what answered
    assert job.status == Status.CANCELLED  # the job's own state is untouched


def test_each_webhook_is_sent_once(
    store: JobStore,
    make_spec: Callable[..., JobSpec],
    settings_env: Callable[..., TrainingSettings],
    receiver: Callable[..., Any],
) -> None:
    hook = receiver()
    settings = settings_env(webhook_secret="k")
    row, _ = store.create(make_spec(webhook={"url": hook.url}))
    store.cancel(row.id)
    assert send_job_webhook(store, row.id, settings)
    assert not send_job_webhook(store, row.id, settings)
    assert len(hook.requests) == 1
    payload = json.loads(hook.requests[0][1])
    assert payload["event"] == "training_job.cancelled" and payload["job"]["id"] == row.id


def test_https_to_an_internal_ca_needs_that_ca_and_the_right_host_name(
    receiver: Callable[..., Any], hospital_ca: HospitalCA
) -> None:
    """A webhook over HTTPS to a receiver whose certificate a hospital's own CA signed: refused
    until the operator adds the CA, and then only for the name the certificate carries."""
    hook = receiver(tls=hospital_ca.server_context("localhost"), host="localhost")
    send = {"secret": "k", "retries": 0, "backoff_s": 0.01, "timeout_s": 5}
    unknown_ca = deliver(hook.url, {"a": 1}, allowed_hosts=["localhost"], **send)
    assert (unknown_ca.delivered, unknown_ca.last_error) == (False, "delivery failed (no answer)")
    assert hook.requests == []
    trusted = deliver(
        hook.url, {"a": 1}, allowed_hosts=["localhost"], extra_ca_pem=hospital_ca.pem, **send
    )
    assert (trusted.delivered, trusted.status_code) == (True, 200)
    ((headers, body),) = hook.requests
    assert json.loads(body) == {"a": 1} and verify(body, headers, "k")
    wrong_name = receiver(tls=hospital_ca.server_context("pacs.example.org"), host="localhost")
    mismatch = deliver(
        wrong_name.url, {}, allowed_hosts=["localhost"], extra_ca_pem=hospital_ca.pem, **send
    )
    assert not mismatch.delivered and wrong_name.requests == []


def test_a_webhook_ca_setting_that_is_not_pem_stops_the_service_at_start(
    settings_env: Callable[..., TrainingSettings],
) -> None:
    with pytest.raises(ValidationError, match="not PEM CA certificates"):
        settings_env(webhook_ca_pem="hello")
    with pytest.raises(ValidationError, match="not PEM CA certificates"):
        settings_env(webhook_ca_pem="-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----")


def test_a_redirect_is_not_followed(receiver: Callable[..., Any]) -> None:
    """A redirect could lead past SCANTUNE_WEBHOOK_ALLOWED_HOSTS to an internal address."""
    inside = receiver([200])
    hook = receiver([307], location=inside.url)
    outcome = deliver(
        hook.url, {}, secret=None, retries=3, backoff_s=0.01, timeout_s=5, allowed_hosts=LOOPBACK
    )
    assert (outcome.delivered, outcome.attempts, outcome.status_code) == (False, 1, 307)
    assert len(hook.requests) == 1 and inside.requests == []


def test_a_webhook_to_a_host_no_longer_allowed_is_not_sent(
    store: JobStore,
    make_spec: Callable[..., JobSpec],
    settings_env: Callable[..., TrainingSettings],
    receiver: Callable[..., Any],
) -> None:
    hook = receiver([200])
    settings = settings_env(webhook_allowed_hosts='["ci.example.org"]')
    row, _ = store.create(make_spec(webhook={"url": hook.url}))
    store.cancel(row.id)
    assert not send_job_webhook(store, row.id, settings)
    job = store.get(row.id)
    assert job.webhook_state == "failed" and hook.requests == []
    assert job.webhook is not None and job.webhook["attempts"] == 1
    assert job.webhook["last_error"].startswith("delivery refused: 127.0.0.1 is a loopback")
