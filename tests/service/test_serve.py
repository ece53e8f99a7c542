"""`scantune serve`: the gunicorn command lines of each service's layouts."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from service.commands.serve import gunicorn_command
from service.cores import available_cores
from tests.conftest import free_port


def options(cmd: list[str]) -> dict[str, str]:
    """gunicorn's --option value pairs (the app is the last word)."""
    words = [w for w in cmd[cmd.index("gunicorn") + 1 : -1] if w != "--no-control-socket"]
    return dict(zip(words[::2], words[1::2], strict=True))


def test_inference_defaults_to_one_sync_worker_per_core_coordinated_by_service_cores() -> None:
    cmd = gunicorn_command("inference", "127.0.0.1")
    found = options(cmd)
    assert found["--worker-class"] == "sync"
    assert found["--workers"] == str(available_cores())
    assert found["--threads"] == "1"  # more would make gunicorn switch to gthread
    assert found["--config"] == "python:service.inference.gunicorn_conf"
    assert found["--timeout"] == "30"  # a stalled client holds a sync worker at most this long
    assert found["--bind"] == "127.0.0.1:8001"
    assert cmd[-1] == "service.inference:create_app()"


def test_inference_gthread_layout_is_one_worker_with_threads_unless_told() -> None:
    found = options(gunicorn_command("inference", "0.0.0.0", worker_class="gthread"))
    assert (found["--workers"], found["--threads"], found["--timeout"]) == ("1", "16", "120")
    found = options(
        gunicorn_command("inference", "0.0.0.0", 9000, workers=3, threads=8, worker_class="gthread")
    )
    assert (found["--workers"], found["--threads"], found["--bind"]) == ("3", "8", "0.0.0.0:9000")


@pytest.mark.parametrize("service", ["training", "inference"])
def test_worker_heartbeats_go_to_memory_where_there_is_a_tmpfs(service: str) -> None:
    found = options(gunicorn_command(service, "127.0.0.1"))
    assert found.get("--worker-tmp-dir") == ("/dev/shm" if os.path.isdir("/dev/shm") else None)


def test_training_has_only_its_threaded_layout() -> None:
    found = options(gunicorn_command("training", "127.0.0.1"))
    layout = (found["--worker-class"], found["--workers"], found["--threads"])
    assert layout == ("gthread", "2", "4")
    assert found["--config"] == "python:service.training_api.gunicorn_conf"  # settings check
    with pytest.raises(SystemExit, match="worker class is one of gthread"):
        gunicorn_command("training", "127.0.0.1", worker_class="sync")


@pytest.mark.parametrize("service", ["training", "inference"])
def test_no_service_opens_gunicorns_shared_control_socket(service: str) -> None:
    import gunicorn

    cmd = gunicorn_command(service, "127.0.0.1")
    assert ("--no-control-socket" in cmd) == (gunicorn.version_info >= (25, 1))


def test_serve_parses_the_worker_class() -> None:
    from service.cli import build_parser

    args = build_parser().parse_args(["serve", "inference", "--worker-class", "gthread"])
    assert args.worker_class == "gthread"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "inference", "--worker-class", "eventlet"])


def test_access_log_is_on_unless_a_benchmark_turns_it_off() -> None:
    found = options(gunicorn_command("inference", "127.0.0.1"))
    assert found["--access-logfile"] == "-"
    assert "rid=%({x-request-id}o)s" in found["--access-logformat"]
    quiet = gunicorn_command("inference", "127.0.0.1", access_log=False)
    assert not {"--access-logfile", "--access-logformat"} & set(options(quiet))
    assert quiet[-1] == "service.inference:create_app()"


# A key's expiry with a time but no offset: ambiguous, so refused (naming the key).
NAIVE_EXPIRY = json.dumps(
    [{"name": "ci", "sha256": "0" * 64, "scopes": ["read"], "expires": "2030-06-30T12:00"}]
)
NAIVE_EXPIRY_SAYS = "SCANTUNE_API_KEYS (at 0.expires): Value error, key 'ci': expires has a time"


@pytest.mark.parametrize(
    ("service", "variable", "value", "says"),
    [
        ("inference", "SCANTUNE_MAX_BATCH_SIZE", "secret-abc", "SCANTUNE_MAX_BATCH_SIZE: Input"),
        ("inference", "SCANTUNE_PRELOAD_MODELS", '["secret-abc"', "SCANTUNE_PRELOAD_MODELS: Expe"),
        ("training", "SCANTUNE_MAX_CONCURRENT_JOBS", "secret-abc", "SCANTUNE_MAX_CONCURRENT_JOBS"),
        ("training", "SCANTUNE_API_KEYS", '[{"name": "secret-abc"}]', "SCANTUNE_API_KEYS (at 0."),
        ("inference", "SCANTUNE_API_KEYS", NAIVE_EXPIRY, NAIVE_EXPIRY_SAYS),
    ],
)
def test_a_bad_setting_stops_the_master_before_forking_with_one_line(
    service: str, variable: str, value: str, says: str, tmp_path: Path
) -> None:
    """The master checks the settings: one error line naming the variable, not a traceback
    from every worker, and never the value, which may be a secret."""
    env = {**os.environ, "SCANTUNE_ARTIFACT_URI": f"file://{tmp_path}", variable: value,
           "SCANTUNE_DATABASE_URL": f"sqlite:///{tmp_path / 'jobs.db'}",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}  # fmt: skip
    cmd = gunicorn_command(service, "127.0.0.1", free_port())
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert f"scantune {service}: invalid settings: {says}" in result.stderr
    assert "Traceback" not in result.stderr and "Booting worker" not in result.stderr
    assert "secret-abc" not in result.stderr
    assert not (tmp_path / "jobs.db").exists()  # nothing half-made


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        ("/dicomweb/studies/1.2.840.113619.2.5", "/dicomweb/studies/{uid}"),
        ("/dicomweb/studies/2.25.1234/series", "/dicomweb/studies/{uid}/series"),
        ("/v1/models/chest-xray:predict", "/v1/models/chest-xray:predict"),
        ("/v1/series/42/send-now", "/v1/series/42/send-now"),
        ("/v1/models/m/versions/1.2", "/v1/models/m/versions/1.2"),
    ],
)
def test_the_access_log_takes_uids_out_of_a_path(path: str, logged: str) -> None:
    from service.access_log import redact_path

    assert redact_path(path) == logged
