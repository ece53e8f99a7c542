"""The command line as a new user meets it: progress while waiting, the best epoch at the end,
gate failures in `jobs list`, misspelt fields, missing keys, unknown models, downloads, and
the Python client the commands are built on."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask import Flask

from service.cli import main
from service.client import ApiError, Client
from service.commands import jobs as jobs_cli
from service.commands.progress import PlainDisplay, RichDisplay, make_display, position
from tests.training_api.conftest import KEYS, job_spec, publish_version
from tests.training_api.test_cli import finish_later, store
from tests.training_api.test_cli import server as server


def running(epoch: int, progress: float, history: int, phase: str = "training") -> dict[str, Any]:
    return {
        "id": "j1",
        "status": "running",
        "phase": phase,
        "epoch": epoch,
        "epochs": 3,
        "progress": progress,
        "history": [
            {"epoch": e, "val_auc": 0.8 + e / 100, "val_loss": 0.5, "train_loss": 0.6}
            for e in range(1, history + 1)
        ],
    }


def test_plain_lines_change_only_when_the_job_does() -> None:
    out = io.StringIO()
    display = PlainDisplay(out)
    polls = [
        running(1, 0.10, 0),
        running(1, 0.20, 0),  # only the percentage moved: no new line
        running(2, 0.35, 1),
        running(2, 0.40, 1),
        running(3, 0.84, 2),
        running(3, 0.86, 3, phase="evaluating"),
        running(3, 0.90, 3, phase="exporting"),
    ]
    for job in polls:
        display.update(job)
    lines = out.getvalue().splitlines()
    assert len(lines) == len(set(lines)) == 5
    # the metrics beside "epoch 2/3" are epoch 1's, and say so
    assert (
        lines[1].startswith("running training epoch 2/3") and "epoch 1: val_auc=0.8100" in lines[1]
    )
    assert "evaluating" in lines[3] and "exporting" in lines[4]


def test_the_live_bar_shows_the_step_inside_the_epoch_while_training() -> None:
    job = running(2, 0.40, 1) | {"step": 40, "steps": 73}
    assert position(job, steps=True) == "running training epoch 2/3 step 40/73"
    assert position(job) == "running training epoch 2/3"  # log lines: one per epoch, not step
    evaluating = running(3, 0.90, 3, phase="evaluating") | {"step": 73, "steps": 73}
    assert "step" not in position(evaluating, steps=True)


def test_a_terminal_gets_a_live_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    display = make_display(out)
    assert isinstance(display, RichDisplay)
    display.update(running(2, 0.5, 1) | {"step": 5, "steps": 9})
    display.close()
    assert "epoch 2/3 step 5/9" in out.getvalue() and "epoch 1: val_auc=0.8100" in out.getvalue()
    assert isinstance(make_display(io.StringIO()), PlainDisplay)


def test_wait_ends_on_the_best_epoch_saying_so(
    app: Flask, server: str, tmp_path: Path, dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump(job_spec(dataset, epochs=3)))
    history = [{"epoch": e, "val_auc": v} for e, v in ((1, 0.90), (2, 0.95), (3, 0.93))]
    finish_later(
        app,
        status="succeeded",
        progress=1.0,
        artifacts={"version": 1},
        history=history,
        best_metrics={"epoch": 2, "val_auc": 0.95},
    )
    assert main(["jobs", "submit", str(spec), "--wait", "--poll-interval", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "published model: the best epoch, 2 of 3 by val_auc: val_auc=0.9500" in out


def test_watch_follows_an_existing_job(
    app: Flask, server: str, dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = Client(server, KEYS["admin"].secret).submit_job(job_spec(dataset))
    store(app).set_fields(job["id"], status="cancelled")
    assert main(["jobs", "watch", job["id"], "--poll-interval", "0.05"]) == jobs_cli.CANCELLED
    assert "was cancelled" in capsys.readouterr().out


def test_list_shows_a_failed_gate_apart_from_success(
    app: Flask, server: str, dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api = Client(server, KEYS["admin"].secret)
    passed, failed = (api.submit_job(job_spec(dataset, seed=s)) for s in (1, 2))
    for job, ok in ((passed, True), (failed, False)):
        promotion = {"alias": "production", "passed": ok, "reason": "val_auc"}
        store(app).set_fields(job["id"], status="succeeded", promotion=promotion)
    assert main(["jobs", "list"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "GATE FAILED" in rows[failed["id"]]
    assert "GATE FAILED" not in rows[passed["id"]] and "succeeded" in rows[passed["id"]]


def test_a_misspelt_field_exits_2_naming_the_file_and_the_field(
    server: str, tmp_path: Path, dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = job_spec(dataset)
    spec["epoch"] = spec.pop("epochs")
    path = tmp_path / "nightly.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["jobs", "submit", str(path)]) == jobs_cli.USAGE
    err = capsys.readouterr().err
    assert str(path) in err and "did you mean `epochs`?" in err and "epoch" in err


def test_the_api_says_did_you_mean_too(client: Any, dataset: Path) -> None:
    spec = job_spec(dataset, recipe={"lrr": 0.1})
    response = client.post("/v1/training-jobs", json=spec)
    assert response.status_code == 422
    (error,) = response.json["errors"]
    assert error["loc"] == "body/recipe/lrr" and "did you mean `lr`?" in error["msg"]


def test_401_names_the_variable_and_the_option(
    server: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SCANTUNE_API_KEY")
    assert main(["jobs", "list"]) == jobs_cli.HTTP_ERROR
    err = capsys.readouterr().err
    assert "401" in err and "SCANTUNE_API_KEY" in err and "--api-key" in err


def test_404_for_a_misspelt_model_lists_the_models(
    server: str, training_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    publish_version(training_env / "artifacts", "chest-xray", 1)
    publish_version(training_env / "artifacts", "knee-mri", 1)
    assert main(["models", "versions", "chest-xry"]) == jobs_cli.HTTP_ERROR
    err = capsys.readouterr().err
    assert "did you mean chest-xray?" in err and "chest-xray, knee-mri" in err


def test_download_writes_every_file_as_stored(
    server: str, training_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    publish_version(training_env / "artifacts", "chest-xray", 1)
    out = tmp_path / "download"
    assert main(["models", "download", "chest-xray", "1", str(out)]) == 0
    stored = training_env / "artifacts/models/chest-xray/versions/1"
    for name in ("card.json", "model.onnx", "plots/roc.png"):
        assert (out / name).read_bytes() == (stored / name).read_bytes()
    assert main(["models", "download", "chest-xray", "7", str(out)]) == jobs_cli.HTTP_ERROR


def test_the_python_client(server: str, training_env: Path, dataset: Path) -> None:
    publish_version(training_env / "artifacts", "chest-xray", 1)
    api = Client(server, KEYS["ci"].secret)
    job = api.submit_job(job_spec(dataset), idempotency_key="nb-1")
    assert api.submit_job(job_spec(dataset), idempotency_key="nb-1")["id"] == job["id"]
    assert api.job(job["id"])["status"] == "queued"
    assert [j["id"] for j in api.jobs()] == [job["id"]]
    assert api.job_metrics(job["id"])["history"] == []
    assert [m["name"] for m in api.models()] == ["chest-xray"]
    assert api.versions("chest-xray")[0]["version"] == 1
    assert api.evaluation("chest-xray", 1)["classes"] == ["normal", "pneumonia"]
    assert "model.onnx" in api.files("chest-xray", 1)
    with pytest.raises(ApiError) as refused:
        api.set_alias("chest-xray", "production", 1)  # ci has no models:write
    assert refused.value.status == 403 and refused.value.problem["status"] == 403
    assert api.cancel_job(job["id"])["status"] == "cancelled"
