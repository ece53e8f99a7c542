"""`scantune jobs` and `scantune models` against the API served on a loopback port."""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask import Flask
from werkzeug.serving import make_server

from models.card import ModelAccess
from service.cli import main
from service.commands import jobs as jobs_cli
from service.commands.client import ApiClient
from tests.conftest import free_port
from tests.training_api.conftest import KEYS, assert_conforms, job_spec, publish_version


@pytest.fixture
def server(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The app on a loopback port; the CLI finds it and its key through the environment."""
    port = free_port()
    httpd = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    _check_every_response(monkeypatch)
    monkeypatch.setenv("SCANTUNE_URL", url)
    monkeypatch.setenv("SCANTUNE_API_KEY", KEYS["admin"].secret)
    yield url
    httpd.shutdown()
    thread.join(timeout=5)


def _check_every_response(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's HTTP responses are checked against the contract like the test client's."""
    original = ApiClient.__init__

    def init(self: ApiClient, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.session.hooks["response"].append(lambda r, *a, **k: assert_conforms(r))

    monkeypatch.setattr(ApiClient, "__init__", init)


@pytest.fixture
def spec_file(tmp_path: Path, dataset: Path) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job_spec(dataset, promote={"alias": "production"})))
    return path


def store(app: Flask) -> Any:
    return app.extensions["scantune"].jobs.store


def finish_later(app: Flask, **fields: Any) -> None:
    """Once a job is queued, write its terminal fields as a runner would."""

    def run() -> None:
        for _ in range(100):
            queued = [r for r in store(app).page(limit=5)[0] if r.status == "queued"]
            if queued:
                store(app).set_fields(queued[0].id, **fields)
                return
            time.sleep(0.05)

    threading.Thread(target=run, daemon=True).start()


def test_submit_prints_the_job_and_exits_0(
    server: str, spec_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["jobs", "submit", str(spec_file), "--idempotency-key", "k1"]) == 0
    first = capsys.readouterr().out
    assert main(["jobs", "submit", str(spec_file), "--idempotency-key", "k1"]) == 0
    assert capsys.readouterr().out == first  # the same job
    job_id = first.split()[1]

    assert main(["jobs", "list"]) == 0
    listed = capsys.readouterr().out
    assert job_id in listed and listed.splitlines()[0].endswith("CLIENT")
    assert main(["jobs", "list", "--client", "another-team"]) == 0  # an admin's filter
    assert job_id not in capsys.readouterr().out
    assert main(["jobs", "show", job_id]) == 0
    assert f'"id": "{job_id}"' in capsys.readouterr().out
    assert main(["jobs", "cancel", job_id]) == 0
    assert "cancelled" in capsys.readouterr().out
    assert main(["jobs", "cancel", job_id]) == jobs_cli.HTTP_ERROR
    assert "409" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("fields", "code", "says"),
    [
        (
            {"status": "succeeded", "progress": 1.0, "artifacts": {"version": 1},
             "promotion": {"alias": "production", "passed": True, "reason": "val_auc 0.9 >= 0.5"}},
            jobs_cli.SUCCEEDED, "promoted to 'production'",
        ),
        (
            {"status": "succeeded", "artifacts": {"version": 2},
             "promotion": {"alias": "production", "passed": False, "reason": "val_auc 0.4 < 0.5"}},
            jobs_cli.GATE_NOT_PASSED, "did not pass: val_auc 0.4 < 0.5",
        ),
        (
            {"status": "failed", "error_reason": "data_error", "error_detail": "no images"},
            jobs_cli.FAILED, "failed (data_error): no images",
        ),
        ({"status": "cancelled"}, jobs_cli.CANCELLED, "was cancelled"),
    ],
)  # fmt: skip
def test_submit_wait_exit_code_says_how_the_job_ended(
    app: Flask,
    server: str,
    spec_file: Path,
    capsys: pytest.CaptureFixture[str],
    fields: dict[str, Any],
    code: int,
    says: str,
) -> None:
    finish_later(app, **fields)

    assert main(["jobs", "submit", str(spec_file), "--wait", "--poll-interval", "0.05"]) == code
    assert says in capsys.readouterr().out


def test_submit_reads_json_from_stdin(
    server: str, dataset: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(job_spec(dataset))))

    assert main(["jobs", "submit", "-", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "queued"


def test_wait_timeout_and_http_errors(
    server: str, spec_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wait = ["--wait", "--poll-interval", "0.05", "--timeout", "0.2"]
    assert main(["jobs", "submit", str(spec_file), *wait]) == jobs_cli.WAIT_TIMEOUT

    assert main(["jobs", "submit", str(tmp_path / "missing.yaml")]) == jobs_cli.USAGE
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model_name": "x", "dataset": {"uri": "/nowhere.npz"}}))
    assert main(["jobs", "submit", str(bad)]) == jobs_cli.HTTP_ERROR
    assert "body/dataset/uri" in capsys.readouterr().err
    assert main(["jobs", "list", "--api-key", "wrong"]) == jobs_cli.HTTP_ERROR
    assert main(["jobs", "list", "--url", "http://127.0.0.1:9"]) == jobs_cli.HTTP_ERROR
    assert "cannot reach" in capsys.readouterr().err


def test_submit_dry_run_says_whether_the_service_would_accept_the_job(
    server: str, spec_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["jobs", "submit", str(spec_file), "--dry-run"]) == jobs_cli.SUCCEEDED
    assert "would accept this job for chest-xray (a new model" in capsys.readouterr().out
    assert main(["jobs", "submit", str(spec_file), "--dry-run", "--json"]) == 0
    check = json.loads(capsys.readouterr().out)
    assert (check["dry_run"], check["spec"]["promote"]["alias"]) == (True, "production")

    gone = tmp_path / "gone.yaml"
    gone.write_text(yaml.safe_dump(job_spec(tmp_path / "gone.npz")))
    assert main(["jobs", "submit", str(gone), "--dry-run"]) == jobs_cli.HTTP_ERROR
    assert "body/dataset/uri" in capsys.readouterr().err
    assert main(["jobs", "submit", str(spec_file), "--dry-run", "--wait"]) == jobs_cli.USAGE
    assert main(["jobs", "list"]) == 0
    assert "queued" not in capsys.readouterr().out  # no job, from any of them


AUDITOR = "auditor-key-0123456789"


@pytest.fixture
def audited(training_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Flask]:
    """The app with an admin key beside the usual ones (`AUDITOR`: the audit trail's reader)."""
    from service.auth import hash_key
    from service.training_api import create_app, services
    from tests.training_api.conftest import api_keys_setting

    auditor = {"name": "auditor", "sha256": hash_key(AUDITOR), "scopes": ["admin"],
               "client": "compliance"}  # fmt: skip
    monkeypatch.setenv("SCANTUNE_API_KEYS", json.dumps([*json.loads(api_keys_setting()), auditor]))
    app = create_app(start_supervisor=False)
    yield app
    with app.app_context():
        services().jobs.stop()


def test_audit_lists_filters_pages_and_exports_the_trail_for_an_admin(
    audited: Flask,
    dataset: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client = audited.test_client()
    for name in ("audit-a", "audit-b", "audit-c"):
        submitted = client.post(
            "/v1/training-jobs", json=job_spec(dataset, model_name=name),
            headers=KEYS["admin"].headers,
        )  # fmt: skip
        assert submitted.status_code == 202, submitted.get_json()
    refused = client.post(
        "/v1/training-jobs", json=job_spec(dataset, promote={"alias": "production"}),
        headers=KEYS["ci"].headers,
    )  # fmt: skip
    assert refused.status_code == 403
    monkeypatch.setattr("service.client.AUDIT_PAGE", 2)  # the trail read page by page
    port = free_port()
    httpd = make_server("127.0.0.1", port, audited, threaded=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    _check_every_response(monkeypatch)
    monkeypatch.setenv("SCANTUNE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("SCANTUNE_API_KEY", AUDITOR)
    try:
        assert main(["audit", "--action", "job_submitted", "--all", "--csv"]) == 0
        rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
        assert [r["target"].split("/")[0] for r in rows] == ["job"] * 3
        assert {r["client"] for r in rows} == {"team"} and rows[0]["at"] > rows[-1]["at"]
        assert json.loads(rows[0]["detail"])["model"] == "audit-c"  # newest first

        assert main(["audit", "--limit", "3"]) == 0
        table = capsys.readouterr().out.splitlines()
        assert table[0].startswith("AT (UTC)") and len(table) == 4
        assert "access_denied" in table[1] and "model/chest-xray" in table[1]
        assert main(["audit", "--action", "access_denied", "--json"]) == 0
        [denied] = json.loads(capsys.readouterr().out)
        assert (denied["outcome"], denied["target"]) == ("refused", "model/chest-xray")
        assert main(["audit", "--since", "2999-01-01"]) == 0
        assert capsys.readouterr().out.strip() == "no records"

        assert main(["audit", "--api-key", KEYS["admin"].secret]) == jobs_cli.HTTP_ERROR
        assert "403" in capsys.readouterr().err  # the admin scope only
        with pytest.raises(SystemExit):
            main(["audit", "--since", "last tuesday"])
        assert "not an ISO 8601 date or time" in capsys.readouterr().err
    finally:
        httpd.shutdown()


def test_models_list_versions_promote(
    server: str, training_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    publish_version(training_env / "artifacts", "chest-xray", 1, val_auc=0.93)
    trainer_metrics = {"best_epoch": 3, "epochs_run": 4, "temperature": 1.1, "val_accuracy": 0.9}
    publish_version(training_env / "artifacts", "chest-xray", 2, metrics=trainer_metrics)

    assert main(["models", "promote", "chest-xray", "2", "--alias", "staging"]) == 0
    assert "staging -> version 2 (set by team" in capsys.readouterr().out
    assert main(["models", "list"]) == 0
    assert "staging=2" in capsys.readouterr().out
    assert main(["models", "versions", "chest-xray"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert "val_auc=0.9300" in table[1]
    assert table[2].endswith(
        "val_accuracy=0.9000 val_auc=0.9700 best_epoch=3.0000 epochs_run=4.0000"
    )
    assert main(["models", "promote", "chest-xray", "9"]) == 5
    assert "body/version" in capsys.readouterr().err
    card = training_env / "artifacts" / "models" / "chest-xray" / "versions" / "1" / "card.json"
    card.write_text("{")
    assert main(["models", "versions", "chest-xray"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].split()[:2] == ["1", "UNREADABLE"] and "card.json" in lines[-1]
    assert lines[-2].split()[0] == "2"


def test_models_compare_prints_a_version_beside_production(
    server: str, training_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from models.card import Estimate

    def auc(low: float, high: float) -> dict[str, Estimate]:
        mid = (low + high) / 2
        return {"auc": Estimate(value=mid, low=low, high=high, images=200, source="validation")}

    artifacts = training_env / "artifacts"
    publish_version(artifacts, "chest-xray", 1, val_auc=0.92, estimates=auc(0.88, 0.96),
                    recipe={"lr": 0.002})  # fmt: skip
    publish_version(artifacts, "chest-xray", 2, val_auc=0.95, estimates=auc(0.92, 0.98),
                    recipe={"lr": 0.001})  # fmt: skip
    assert main(["models", "promote", "chest-xray", "1"]) == 0
    capsys.readouterr()

    assert main(["models", "compare", "chest-xray", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "chest-xray version 2 against version 1 (production)"
    assert "same held-out scans" in lines[1]
    assert lines[3].split() == ["val_auc", "(higher", "is", "better)", "0.950", "0.920", "+0.030"]
    assert lines[4].split()[-1] == "overlap" and "0.950 [0.920-0.980]" in lines[4]
    assert lines[5] == "  changed: recipe.lr 0.001 (was 0.002)"
    assert lines[6].startswith("  caveats of version 2: ") and lines[6].endswith("decision_aid")
    assert main(["models", "compare", "chest-xray", "1", "--against", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["against"] == {"version": 2, "alias": None}
    assert main(["models", "compare", "chest-xray", "1"]) == 5  # production is version 1
    assert "nothing to compare: alias 'production' points to version 1" in capsys.readouterr().err


def test_models_access_shows_and_changes_who_may_use_a_version(
    server: str, training_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    publish_version(training_env / "artifacts", "chest-xray", 1, access=ModelAccess(owner="team"))
    assert main(["models", "access", "chest-xray", "1"]) == 0
    assert "shared - used by every key" in capsys.readouterr().out
    assert main(["models", "access", "chest-xray", "1", "--client", "gw", "--client", "ed"]) == 0
    out = capsys.readouterr().out
    assert "private - used by team (owner), ed, gw and admin keys" in out
    assert "set by team at" in out
    assert main(["models", "access", "chest-xray", "1", "--private", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert (record["private"], record["clients"]) == (True, [])
    assert [h["clients"] for h in record["history"]] == [["ed", "gw"]]
    assert main(["models", "access", "chest-xray", "1", "--shared"]) == 0
    assert "shared" in capsys.readouterr().out
    assert main(["models", "access", "chest-xray", "2", "--shared"]) == 5
    assert "has no version 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # one change at a time
        main(["models", "access", "chest-xray", "1", "--shared", "--private"])


def test_models_withdraw_and_reinstate(
    server: str, training_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    publish_version(training_env / "artifacts", "chest-xray", 1, access=ModelAccess(owner="team"))
    argv = ["chest-xray", "1", "--reason", "misses effusions"]
    assert main(["models", "withdraw", *argv]) == 0
    assert capsys.readouterr().out == "chest-xray version 1: withdrawn (misses effusions)\n"
    assert main(["models", "versions", "chest-xray"]) == 0
    assert capsys.readouterr().out.splitlines()[1].endswith("WITHDRAWN: misses effusions")
    assert main(["models", "promote", "chest-xray", "1"]) == 5
    assert "is withdrawn: misses effusions" in capsys.readouterr().err
    assert main(["models", "reinstate", *argv]) == 5  # this key is no admin's
    assert "only an admin key" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a reason is required
        main(["models", "withdraw", "chest-xray", "1"])


def test_models_outcomes_reports_a_csv_in_chunks_and_shows_the_figures(
    server: str,
    training_env: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from models.card import DecisionThreshold
    from service.commands import outcomes

    cut = DecisionThreshold(positive_class="pneumonia", value=0.5)
    publish_version(training_env / "artifacts", "chest-xray", 1, access=ModelAccess(owner="team"),
                    threshold=cut)  # fmt: skip
    monkeypatch.setenv("SCANTUNE_API_KEY", KEYS["pacs"].secret)
    monkeypatch.setattr(outcomes, "CHUNK", 2)  # three rows: two requests
    sheet = tmp_path / "reads.csv"
    sheet.write_text("reference,label,normal,pneumonia\nA,pneumonia,0.2,0.8\n"
                     "B,normal,0.7,0.3\nC,normal,0.4,0.6\n")  # fmt: skip
    assert main(["models", "outcomes", "chest-xray", "1", "--report", str(sheet)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["rows 1-2: kept, 0 replacing earlier reports",
                       "rows 3-3: kept, 0 replacing earlier reports"]  # fmt: skip
    assert out[2] == "chest-xray version 1: 3 reported outcome(s) from every client (1 client(s))"
    assert out[3] == "  decided by threshold 0.5; by label: normal 2, pneumonia 1"
    assert out[4].split()[:2] == ["accuracy", "0.667"]  # C said pneumonia at 0.6
    assert main(["models", "outcomes", "chest-xray", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["confusion_matrix"] == [[1, 1], [0, 1]]
    assert main(["models", "caveats", "chest-xray", "1"]) == 0  # outcomes now confirm it
    head, *said = capsys.readouterr().out.splitlines()
    assert head == "chest-xray version 1: keep in mind"
    assert said[-1].endswith("[decision_aid]") and not any("nothing_confirmed" in s for s in said)
    assert main(["models", "caveats", "chest-xray", "1", "--json"]) == 0
    assert "no_modality" in [c["code"] for c in json.loads(capsys.readouterr().out)["caveats"]]
    from service.client import Client

    client = Client(server, KEYS["pacs"].secret)  # the Python client, as a PACS would use it
    corrected = {"reference": "C", "label": "pneumonia",
                 "probabilities": {"normal": 0.4, "pneumonia": 0.6}}  # fmt: skip
    assert client.report_outcomes("chest-xray", 1, [corrected])["replaced"] == 1
    assert client.outcomes("chest-xray", 1)["accuracy"]["value"] == 1.0
    assert client.outcomes("chest-xray", 1, until="2026-01-01T00:00:00Z")["reports"] == 0
    assert [c["code"] for c in client.caveats("chest-xray", 1)][-1] == "decision_aid"
    assert main(["models", "outcomes", "chest-xray", "1", "--since", "2026-01-01"]) == 0
    assert capsys.readouterr().out.startswith(
        "chest-xray version 1: 3 reported outcome(s) since 2026-01-01T00:00:00+00:00 from"
    )
    # B's read withdrawn (a struck finding); "nobody" was never reported: no error, a retry
    retracted = client.retract_outcomes("chest-xray", 1, ["B", "nobody"])
    assert retracted == {"name": "chest-xray", "version": 1, "retracted": 1, "unknown": 1}
    assert main(["models", "outcomes", "chest-xray", "1", "--retract", "C", "--retract", "B"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "1 report(s) withdrawn, 1 never reported"
    assert out[1].startswith("chest-xray version 1: 1 reported outcome(s) from every client")
    assert main(["models", "outcomes", "chest-xray", "1", "--by", "month"]) == 0
    title, head, row = capsys.readouterr().out.splitlines()  # all reported this month
    assert title.startswith("chest-xray version 1 by month since ") and "MONTH OF" in head
    assert row.split()[1:4] == ["(part)", "1", "1.000"]  # A: pneumonia, said 0.8; month under way
    [period] = client.outcome_trend("chest-xray", 1, bucket="week")["periods"]
    assert main(["models", "outcomes", "chest-xray", "1", "--by", "client"]) == 0  # the owner's
    title, head, row = capsys.readouterr().out.splitlines()
    assert "by client" in title and row.split()[:3] == ["team", "1", "1.000"]
    assert client.outcomes_by_client("chest-xray", 1)["clients"][0]["client"] == "team"
    assert client.outcomes("chest-xray", 1, client="team")["reports"] == 1
    assert period["reports"] == 1 and period["sensitivity"]["value"] == 1.0
    sheet.write_text("reference,label,normal,pneumonia\nD,normal,low,0.3\n")
    assert main(["models", "outcomes", "chest-xray", "1", "--report", str(sheet)]) == 2
    assert "row 2: each class's column holds a number" in capsys.readouterr().err
    sheet.write_text("reference,label,normal,pneumonia\nD,effusion,0.7,0.3\n")
    assert main(["models", "outcomes", "chest-xray", "1", "--report", str(sheet)]) == 5
    assert "body/outcomes/0/label" in capsys.readouterr().err


def test_models_versions_follows_the_pages_or_shows_the_newest(
    server: str, training_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    from service.commands import models as models_cli

    for version in range(1, 6):
        publish_version(training_env / "artifacts", "chest-xray", version)
    monkeypatch.setattr(models_cli, "PAGE", 2)  # three requests for five versions
    assert main(["models", "versions", "chest-xray", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert [v["version"] for v in body["items"]] == [1, 2, 3, 4, 5]
    assert body["next_cursor"] is None
    assert main(["models", "versions", "chest-xray", "--newest", "2"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert [row.split()[0] for row in rows] == ["5", "4"]


def test_an_unreachable_service_is_named_by_the_command_that_calls_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scan = tmp_path / "scan.png"
    scan.write_bytes(b"not read: the service is not there")
    assert main(["predict", "--model", "x", "--url", "http://127.0.0.1:9", str(scan)]) == 5
    assert "cannot reach the inference API at http://127.0.0.1:9" in capsys.readouterr().err
    assert main(["models", "list", "--url", "http://127.0.0.1:9"]) == 5
    assert "cannot reach the training API at http://127.0.0.1:9" in capsys.readouterr().err
