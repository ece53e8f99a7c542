"""API keys that expire: what `expires` means (a date is the end of that day, UTC; a
date-time must give its offset), the key ring refusing by the clock of each check, and the
entry `scantune keys new` prints. The services' refusals are in tests/*/test_key_expiry.py."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from service.auth import KeyRing, hash_key
from service.config import ApiKey, CommonSettings, describe_settings_error, settings_or_exit
from service.errors import Unauthorized
from tests.conftest import free_port, wait_for_port


def key(expires: object = None, name: str = "ci-nightly") -> ApiKey:
    entry = {"name": name, "sha256": hash_key("k"), "scopes": ["read"], "expires": expires}
    return ApiKey.model_validate(entry)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_a_date_means_the_end_of_that_day_utc() -> None:
    ring = KeyRing([key("2030-03-31")])
    for moment, works in [
        ("2030-03-31T00:00:00Z", True),
        ("2030-03-31T23:59:59.999999Z", True),
        ("2030-04-01T01:59:59+02:00", True),  # still the 31st in UTC
        ("2030-04-01T00:00:00Z", False),
        ("2030-03-31T20:00:00-05:00", False),  # the 1st in UTC
    ]:
        ring.clock = lambda moment=moment: at(moment)  # type: ignore[misc]
        if works:
            assert ring.authenticate("k", "read") is not None, moment
        else:
            with pytest.raises(Unauthorized):
                ring.authenticate("k", "read")
    assert key("2030-03-31").expires_text == "2030-04-01T00:00:00Z"


def test_a_date_time_ends_the_key_at_that_instant_whatever_its_offset() -> None:
    entry = key("2030-06-30T12:00:00+02:00")
    assert entry.expires == at("2030-06-30T10:00:00Z")
    assert entry.expires_text == "2030-06-30T10:00:00Z"
    assert not entry.expired(at("2030-06-30T09:59:59Z"))
    assert entry.expired(at("2030-06-30T10:00:00Z"))
    assert key("2030-06-30T10:00Z").expires == entry.expires


def test_an_entry_without_expires_works_as_before_forever() -> None:
    entry = ApiKey.model_validate({"name": "pacs", "sha256": hash_key("k"), "scopes": ["read"]})
    assert entry.expires is None and entry.expires_text == "never"
    ring = KeyRing([entry], clock=lambda: datetime(9999, 12, 31, tzinfo=UTC))
    assert ring.authenticate("k", "read") == entry


@pytest.mark.parametrize(
    ("expires", "says"),
    [
        ("2030-06-30T12:00:00", "has a time but no UTC offset, which is ambiguous"),
        ("2030-06-30 12:00", "has a time but no UTC offset"),
        ("next tuesday", "not an ISO 8601 date or date-time"),
        ("2030-02-30", "not an ISO 8601 date or date-time"),
        (1917734400, "not an ISO 8601 date or date-time"),  # Unix time: not what the docs say
    ],
)
def test_an_unclear_expiry_is_refused_at_start_naming_the_key(
    expires: object, says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = [
        {"name": "pacs", "sha256": hash_key("a"), "scopes": ["predict"]},
        {"name": "ci-nightly", "sha256": hash_key("b"), "scopes": ["read"], "expires": expires},
    ]
    monkeypatch.setenv("SCANTUNE_API_KEYS", json.dumps(entries))
    with pytest.raises(ValidationError) as refused:
        CommonSettings()
    line = describe_settings_error(refused.value)
    assert line.startswith("SCANTUNE_API_KEYS (at 1.expires): Value error, key 'ci-nightly': ")
    assert says in line and "\n" not in line


def test_a_naive_expiry_stops_the_service_with_one_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    entry = {"name": "ci-nightly", "sha256": hash_key("b"), "scopes": ["read"]}
    monkeypatch.setenv("SCANTUNE_API_KEYS", json.dumps([{**entry, "expires": "2030-06-30T12:00"}]))
    log = logging.getLogger("test.serve")
    with caplog.at_level(logging.ERROR, "test.serve"), pytest.raises(SystemExit) as stopped:
        settings_or_exit(CommonSettings, log, "training")
    assert stopped.value.code == 2
    [line] = caplog.messages
    assert line.startswith("scantune training: invalid settings: SCANTUNE_API_KEYS (at 0.expires)")
    assert "key 'ci-nightly'" in line and "no UTC offset" in line


def test_the_key_ring_reads_its_clock_at_each_check() -> None:
    """A server started before the moment refuses the key once it passes: no restart."""
    now = [at("2030-06-30T09:00:00Z")]
    entry = key("2030-06-30T10:00:00Z")
    ring = KeyRing([entry], clock=lambda: now[0])
    assert ring.authenticate("k", "read") == entry
    now[0] += timedelta(minutes=59, seconds=59)
    assert ring.authenticate("k", "read") == entry
    now[0] += timedelta(seconds=1)
    with pytest.raises(Unauthorized) as refused:
        ring.authenticate("k", "read")
    assert refused.value.detail.startswith(
        "the API key 'ci-nightly' expired at 2030-06-30T10:00:00Z"
    )
    assert refused.value.headers["WWW-Authenticate"] == (
        'Bearer error="invalid_token", error_description="the API key expired at'
        ' 2030-06-30T10:00:00Z"'
    )
    with pytest.raises(Unauthorized, match="expired"):  # before the scope is looked at
        ring.authenticate("k", "admin")
    with pytest.raises(Unauthorized, match="not valid"):  # a wrong key is still just wrong
        ring.authenticate("other", "read")


def test_the_default_clock_is_the_real_one() -> None:
    past, future = datetime.now(UTC) - timedelta(days=1), datetime.now(UTC) + timedelta(days=1)
    assert KeyRing([key(future)]).authenticate("k", "read") is not None
    with pytest.raises(Unauthorized):
        KeyRing([key(past)]).authenticate("k", "read")


def test_under_gunicorn_each_key_is_one_series_whatever_the_workers(tmp_path: Path) -> None:
    """Every worker sets the gauges (multiprocess mode "mostrecent"): /metrics, whichever
    worker answers it, has one series a key, not one a worker."""
    from service.commands.serve import gunicorn_command

    entries = [
        {"name": "ci-nightly", "sha256": hash_key("a"), "scopes": ["read"],
         "expires": "2030-03-31"},
        {"name": "pacs", "sha256": hash_key("b"), "scopes": ["predict"]},
    ]  # fmt: skip
    (tmp_path / "artifacts").mkdir()
    (tmp_path / "metrics").mkdir()
    env = {**os.environ, "SCANTUNE_API_KEYS": json.dumps(entries),
           "SCANTUNE_ARTIFACT_URI": (tmp_path / "artifacts").as_uri(),
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}  # fmt: skip
    port = free_port()
    cmd = gunicorn_command("inference", "127.0.0.1", port, workers=2)
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, timeout=60, proc=server)
        for _ in range(4):  # more than one worker answers
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            [family] = [
                f
                for f in text_string_to_metric_families(text)
                if f.name == "scantune_api_key_expiry_timestamp_seconds"
            ]
            assert sorted((s.labels["key"], s.value) for s in family.samples) == [
                ("ci-nightly", at("2030-04-01T00:00:00Z").timestamp()),
                ("pacs", float("inf")),
            ]
    finally:
        server.terminate()
        server.wait(timeout=30)


# -- scantune keys new -----------------------------------------------------------------------


def new_entry(capsys: pytest.CaptureFixture[str], *options: str) -> tuple[dict[str, object], str]:
    from service.cli import main

    assert main(["keys", "new", "--name", "ci-nightly", "--scope", "read", *options]) == 0
    out = capsys.readouterr().out
    line = out.split("SCANTUNE_API_KEYS entry: ", 1)[1]
    ApiKey.model_validate_json(line)  # what the services will read
    return json.loads(line), out


def test_a_new_key_expires_in_a_year_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    before = datetime.now(UTC).date()
    made, out = new_entry(capsys)
    after = datetime.now(UTC).date()
    assert made["expires"] in {(d + timedelta(days=365)).isoformat() for d in (before, after)}
    assert f"it works to the end of {made['expires']} (UTC); rotate it before then" in out


def test_a_new_key_s_lifetime_can_be_chosen_or_opted_out_of(
    capsys: pytest.CaptureFixture[str],
) -> None:
    made, _ = new_entry(capsys, "--expires-days", "30")
    today = datetime.now(UTC).date()
    assert made["expires"] in {(today + timedelta(days=d)).isoformat() for d in (29, 30)}
    made, out = new_entry(capsys, "--expires", "2030-06-30T12:00:00+02:00")
    assert key(made["expires"]).expires == at("2030-06-30T10:00:00Z")
    assert "it works until 2030-06-30T12:00:00+02:00;" in out
    made, out = new_entry(capsys, "--no-expiry")
    assert "expires" not in made and "it never expires" in out


def test_keys_new_refuses_what_the_services_would(capsys: pytest.CaptureFixture[str]) -> None:
    from service.cli import main

    with pytest.raises(SystemExit, match="key 'ci': expires has a time but no UTC offset"):
        main(["keys", "new", "--name", "ci", "--scope", "read", "--expires", "2030-06-30T12:00"])
    for wrong in (["--expires-days", "0"], ["--no-expiry", "--expires-days", "3"]):
        with pytest.raises(SystemExit) as stopped:
            main(["keys", "new", "--name", "ci", "--scope", "read", *wrong])
        assert stopped.value.code == 2
    assert "SCANTUNE_API_KEYS entry" not in capsys.readouterr().out


def test_the_cli_tells_the_holder_of_an_expired_key_to_get_a_new_one() -> None:
    import argparse

    from service.client import ApiError
    from service.commands.client import hint

    args = argparse.Namespace(api_key="k", url="http://127.0.0.1:8000")
    expired = {
        "detail": "the API key 'ci' expired at 2030-02-01T00:00:00Z: its holder needs a new one"
    }
    assert "ask for a new key" in hint(ApiError("refused", 401, expired), args)
    unknown = hint(ApiError("refused", 401, {"detail": "the API key is not valid"}), args)
    assert "the API key was refused" in unknown and "new key" not in unknown
