"""The node's HTTP side and its settings, through the app factory (the SCP not started):
STOW-RS answers and problems, health, routing rules, the allow-list, retention."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import update

from service.auth import hash_key
from service.config import DicomNodeSettings
from service.dicom_node.peers import DicomDestination, DicomRoute
from service.dicom_node.queue import InstanceMeta
from service.dicom_node.routing import Router
from service.dicom_node.scp import CallerList
from service.dicom_node.tables import SeriesRow
from service.jobs.store import utcnow
from tests.dicom_node.parts import make_study

KEY = "stow-key"
BOUNDARY = "scantune-test-boundary"


@pytest.fixture
def make_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    from service.dicom_node.app import create_app

    def make(**env: Any) -> Any:
        values = {
            "database_url": f"sqlite:///{tmp_path / 'node.db'}",
            "dicom_spool_dir": str(tmp_path / "spool"),
            "dicom_routes": [{"model": "chest-xray", "modality": "CR"}],
            "api_keys": [{"name": "pacs", "sha256": hash_key(KEY), "scopes": ["predict"]}],
            **env,
        }
        for key, value in values.items():
            monkeypatch.setenv(f"SCANTUNE_{key.upper()}", value if isinstance(value, str)
                               else json.dumps(value))  # fmt: skip
        app = create_app(start=False)
        app.testing = True
        return app

    return make


def multipart(*parts: bytes, kind: str = "application/dicom") -> tuple[bytes, str]:
    body = b"".join(
        f"--{BOUNDARY}\r\nContent-Type: {kind}\r\n\r\n".encode() + part + b"\r\n" for part in parts
    )
    return body + f"--{BOUNDARY}--\r\n".encode(), (
        f'multipart/related; type="{kind}"; boundary={BOUNDARY}'
    )


def encoded(ds: Any) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def post(
    client: Any,
    body: bytes,
    content_type: str,
    key: str | None = KEY,
    url: str = "/dicomweb/studies",
) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return client.post(url, data=body, content_type=content_type, headers=headers)


def test_stow_takes_a_study_and_answers_the_store_instances_response(make_app: Any) -> None:
    app = make_app()
    study = make_study(2)
    answer = post(app.test_client(), *multipart(*(encoded(ds) for ds in study)))
    assert answer.status_code == 200 and answer.mimetype == "application/dicom+json"
    refs = answer.json["00081199"]["Value"]
    assert [r["00081155"]["Value"][0] for r in refs] == [ds.SOPInstanceUID for ds in study]
    node = app.extensions["scantune.dicom"]
    assert node.queue.stats().depth == 1
    assert len(list((Path(node.settings.dicom_spool_dir)).glob("*.dcm"))) == 2


def test_stow_answers_202_for_a_partly_bad_body_and_409_when_nothing_is_taken(
    make_app: Any,
) -> None:
    client = make_app().test_client()
    good = encoded(make_study(1)[0])
    partly = post(client, *multipart(good, b"not dicom at all"))
    assert partly.status_code == 202
    assert partly.json["00081198"]["Value"][0]["00081197"]["Value"] == [0xC000]
    none = post(client, *multipart(b"nope"))
    assert none.status_code == 409 and "00081199" not in none.json


def test_stow_to_one_study_takes_its_instances_and_fails_another_studys(make_app: Any) -> None:
    app = make_app()
    ours, theirs = make_study(2), make_study(1)
    study = ours[0].StudyInstanceUID
    assert theirs[0].StudyInstanceUID != study
    body = multipart(*(encoded(ds) for ds in (*ours, *theirs)))
    answer = post(app.test_client(), *body, url=f"/dicomweb/studies/{study}")
    assert answer.status_code == 202
    taken = [r["00081155"]["Value"][0] for r in answer.json["00081199"]["Value"]]
    assert taken == [ds.SOPInstanceUID for ds in ours]
    (failed,) = answer.json["00081198"]["Value"]
    assert failed["00081155"]["Value"] == [theirs[0].SOPInstanceUID]
    assert failed["00081197"]["Value"] == [0xA901]
    node = app.extensions["scantune.dicom"]
    assert len(list(Path(node.settings.dicom_spool_dir).glob("*.dcm"))) == 2  # not the other


@pytest.mark.parametrize("study", ["1.2.abc", "1..2", "1." + "2" * 70])
def test_stow_to_a_study_that_is_not_a_uid_is_a_400_that_keeps_nothing(
    make_app: Any, study: str
) -> None:
    app = make_app()
    answer = post(
        app.test_client(), *multipart(encoded(make_study(1)[0])), url=f"/dicomweb/studies/{study}"
    )
    assert answer.status_code == 400 and answer.mimetype == "application/problem+json"
    assert answer.json["errors"][0]["loc"] == "path/study"
    node = app.extensions["scantune.dicom"]
    assert not list(Path(node.settings.dicom_spool_dir).glob("*.dcm"))


@pytest.mark.parametrize(
    ("body", "content_type", "status", "says"),
    [
        (b"{}", "application/json", 415, "multipart/related"),
        (*multipart(b"x", kind="application/dicom+xml"), 415, "application/dicom+xml"),
        (b"", f'multipart/related; type="application/dicom"; boundary={BOUNDARY}', 400, "no part"),
    ],
)
def test_stow_refuses_what_is_not_a_dicom_multipart_with_a_problem(
    make_app: Any, body: bytes, content_type: str, status: int, says: str
) -> None:
    answer = post(make_app().test_client(), body, content_type)
    assert answer.status_code == status
    assert answer.mimetype == "application/problem+json" and says in answer.json["detail"]


def test_stow_needs_a_key_with_the_predict_scope(make_app: Any) -> None:
    client = make_app().test_client()
    body, content_type = multipart(encoded(make_study(1)[0]))
    assert post(client, body, content_type, key=None).status_code == 401
    assert post(client, body, content_type, key="wrong").status_code == 401


def test_health_and_readiness(make_app: Any) -> None:
    client = make_app().test_client()
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 503  # the SCP is not listening in this app
    # what failed, never why (an unauthenticated route): see docs/security.md
    assert ready.json["checks"] == {"database": "ok", "dicom": "failed"}


def test_retrievals_count_against_the_clients_rate_limit(make_app: Any) -> None:
    from tests.conftest import free_port

    down = {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": free_port()}
    app = make_app(
        api_keys=[{"name": "ris", "sha256": hash_key(KEY), "scopes": ["series:retrieve"]}],
        dicom_sources=[down],
        dicom_retrieve_timeout_s=2,
        rate_limits={"retrievals": "1/minute"},
    )
    client, auth = app.test_client(), {"Authorization": f"Bearer {KEY}"}
    asked = {"source": "pacs", "study_instance_uid": "1.2.3"}
    first = client.post("/v1/retrievals", json=asked, headers=auth)
    assert first.status_code == 502  # nothing listens there: counted all the same
    second = client.post("/v1/retrievals", json=asked, headers=auth)
    assert second.status_code == 429 and int(second.headers["Retry-After"]) > 0
    assert "over its limit of 1 per 1 minute for retrievals" in second.json["detail"]


def test_the_first_matching_route_wins_and_every_given_key_must_match() -> None:
    router = Router(
        [
            DicomRoute(model="mammo", modality="MG"),
            DicomRoute(model="chest-ct", modality="ct", body_part="chest", calling_ae="CT01"),
            DicomRoute(model="any-ct", modality="CT"),
        ]
    )
    ct = InstanceMeta("1", "2", "3", "1.2.840.10008.5.1.4.1.1.2", "CT", "CHEST ", "CT01")
    assert router.route(ct).model == "chest-ct"  # type: ignore[union-attr]
    other = InstanceMeta("1", "2", "3", "1.2.840.10008.5.1.4.1.1.2", "CT", "HEAD", "CT01")
    assert router.route(other).model == "any-ct"  # type: ignore[union-attr]
    assert router.route(InstanceMeta("1", "2", "3", "x", "MR", "", "A")) is None


def test_a_route_sends_to_the_destinations_it_names_and_a_name_nothing_has_stops_the_node(
    monkeypatch: Any,
) -> None:
    pacs = {"name": "pacs", "ae_title": "PACS", "host": "10.1.2.4", "port": 104}
    ris = {"name": "ris", "hl7": {"host": "engine", "port": 6661, "receiving_application": "RIS"}}
    archive = {"stow_url": "https://archive/dicom-web"}  # unnamed: only routes naming none
    monkeypatch.setenv("SCANTUNE_DICOM_DESTINATIONS", json.dumps([pacs, ris, archive]))
    routes = [
        {"model": "mammo", "modality": "MG", "destinations": ["ris", "pacs"]},
        {"model": "chest", "modality": "CR"},
    ]
    monkeypatch.setenv("SCANTUNE_DICOM_ROUTES", json.dumps(routes))
    settings = DicomNodeSettings()
    router = Router(settings.dicom_routes, settings.dicom_destinations)
    mg, cr = settings.dicom_routes
    assert router.destination_keys(mg) == ["PACS@10.1.2.4:104", "mllp://engine:6661/RIS"]
    assert router.destination_keys(cr) is None  # every destination, as before routes named any
    ward = {"name": "ward", "hl7": {"host": "ward", "port": 6662}, "only_findings": ["pneumonia"]}
    settings = DicomNodeSettings.model_validate({"dicom_destinations": [pacs, ris, ward]})
    keys = [d.key for d in settings.dicom_destinations]
    router = Router([], settings.dicom_destinations)
    classes = {"pneumonia", "normal"}
    assert router.not_wanted(keys, {"pneumonia", "normal"}, classes) == {}  # one had it: sent
    (skipped,) = router.not_wanted(keys, {"normal"}, classes).items()
    assert skipped == (keys[2], "not sent: it takes only pneumonia, and no scan was answered so")
    (never,) = router.not_wanted(keys, {"normal"}, {"normal", "pneumonia-"}).values()
    assert never == "not sent: it takes only pneumonia, which the model never answers"

    def refused(routes: list[Any], destinations: list[Any], match: str) -> None:
        monkeypatch.setenv("SCANTUNE_DICOM_ROUTES", json.dumps(routes))
        monkeypatch.setenv("SCANTUNE_DICOM_DESTINATIONS", json.dumps(destinations))
        with pytest.raises(ValidationError, match=match):
            DicomNodeSettings()

    typo = {"model": "chest", "destinations": ["Pacs"]}  # names are exact
    refused([routes[1], typo], [pacs, ris], r"dicom_routes\[1\] names destination 'Pacs'")
    refused([routes[1]], [pacs, {**ris, "name": "pacs"}], "name 'pacs' given twice")
    refused([routes[1]], [pacs, {**pacs, "name": "other"}], "address 'PACS@10.1.2.4:104' given")
    refused([{"model": "chest", "destinations": []}], [pacs], "at least 1 item")
    with pytest.raises(ValidationError, match="name"):
        DicomDestination.model_validate({**pacs, "name": "the pacs"})


def test_settings_parse_peers_and_refuse_half_a_destination(monkeypatch: Any) -> None:
    monkeypatch.setenv(
        "SCANTUNE_DICOM_DESTINATIONS",
        '[{"ae_title": "PACS", "host": "10.1.2.4", "port": 104},'
        ' {"stow_url": "https://pacs/dicom-web"}]',
    )
    settings = DicomNodeSettings()
    assert [d.key for d in settings.dicom_destinations] == [
        "PACS@10.1.2.4:104",
        "https://pacs/dicom-web",
    ]
    assert settings.dicom_allowed_callers == [] and settings.dicom_bind_host == "127.0.0.1"
    with pytest.raises(ValidationError, match="ae_title, host and port"):
        DicomDestination(ae_title="PACS", host="h")
    with pytest.raises(ValidationError, match="not both"):
        DicomDestination(ae_title="PACS", host="h", port=104, stow_url="http://x")
    with pytest.raises(ValidationError, match="authorization_file goes with stow_url"):
        DicomDestination(ae_title="PACS", host="h", port=104, authorization_file=Path("/s"))
    engine = {"host": "engine", "port": 6661}
    with pytest.raises(ValidationError, match="an hl7 destination takes no other key"):
        DicomDestination.model_validate({"hl7": engine, "stow_url": "https://pacs/dicom-web"})
    with pytest.raises(ValidationError, match="an hl7 destination takes no other key"):
        DicomDestination.model_validate({"hl7": engine, "tls": True})
    with pytest.raises(ValidationError, match="an hl7 destination takes no other key"):
        DicomDestination.model_validate({"hl7": engine, "attention_maps": True})
    with pytest.raises(ValidationError, match="processing_id"):
        DicomDestination.model_validate({"hl7": {**engine, "processing_id": "X"}})
    ehr = {"url": "https://ehr/fhir/r4"}
    assert DicomDestination.model_validate({"fhir": ehr}).key == "https://ehr/fhir/r4"
    with pytest.raises(ValidationError, match="an fhir destination takes no other key"):
        DicomDestination.model_validate({"fhir": ehr, "authorization_file": "/s"})
    with pytest.raises(ValidationError, match="an hl7 destination takes no other key"):
        DicomDestination.model_validate({"hl7": engine, "fhir": ehr})
    named = DicomDestination.model_validate({"name": "ehr", "fhir": ehr})  # a name is no key
    assert (named.name, named.key) == ("ehr", "https://ehr/fhir/r4")
    idp = {"token_url": "https://idp/token", "client_id": "n", "client_secret_file": "/s"}
    with pytest.raises(ValidationError, match="authorization_file or oauth, not both"):
        DicomDestination.model_validate({"fhir": {**ehr, "authorization_file": "/a", "oauth": idp}})
    with pytest.raises(ValidationError, match="url"):
        DicomDestination.model_validate({"fhir": {"url": "ehr/fhir"}})


def test_the_allow_list_needs_title_and_address_and_is_empty_by_default() -> None:
    from service.config import DicomCaller

    callers = CallerList([DicomCaller(ae_title="CT01", host="10.1.2.3")])
    assert callers.allows("CT01", "10.1.2.3") and callers.allows("CT01 ", "::ffff:10.1.2.3")
    assert not callers.allows("CT02", "10.1.2.3") and not callers.allows("CT01", "10.1.2.4")
    assert not CallerList([]).allows("CT01", "10.1.2.3")


def test_work_past_the_retention_limit_is_deleted_and_counted(make_app: Any) -> None:
    app = make_app(dicom_retention_h=1)
    post(app.test_client(), *multipart(encoded(make_study(1)[0])))
    node = app.extensions["scantune.dicom"]
    spool = Path(node.settings.dicom_spool_dir)
    assert len(list(spool.glob("*.dcm"))) == 1
    node.worker.expire()
    assert node.queue.stats().depth == 1  # not yet past the limit
    with node.queue.engine.begin() as conn:
        conn.execute(update(SeriesRow).values(created_at=utcnow() - timedelta(hours=2)))
    node.worker.expire()
    assert node.queue.stats().depth == 0 and list(spool.glob("*.dcm")) == []
    metrics = app.test_client().get("/metrics").text
    assert "scantune_dicom_series_expired_total 1.0" in metrics


def test_retries_back_off_up_to_the_limit(make_app: Any) -> None:
    worker = (
        make_app(dicom_retry_first_s=2, dicom_retry_max_s=30).extensions["scantune.dicom"].worker
    )
    assert [worker.backoff(n) for n in range(6)] == [2, 4, 8, 16, 30, 30]


@pytest.mark.parametrize(
    ("env", "workers", "says"),
    [
        ({"SCANTUNE_DICOM_ROUTES": '[{"modality": "CR"}]'}, None, "SCANTUNE_DICOM_ROUTES (at 0."),
        ({}, 2, "runs one worker"),
    ],
)
def test_the_master_stops_on_a_bad_setting_or_a_second_worker(
    env: dict[str, str], workers: int | None, says: str, tmp_path: Path
) -> None:
    import os
    import subprocess

    from service.commands.serve import gunicorn_command
    from tests.conftest import free_port

    full = {**os.environ, **env, "SCANTUNE_DATABASE_URL": f"sqlite:///{tmp_path / 'n.db'}",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}  # fmt: skip
    cmd = gunicorn_command("dicom", "127.0.0.1", free_port(), workers=workers)
    assert cmd[cmd.index("--worker-class") + 1] == "gthread"
    result = subprocess.run(cmd, env=full, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert says in result.stderr and "Booting worker" not in result.stderr
    assert not (tmp_path / "n.db").exists()


def test_a_restart_sweeps_files_no_row_names_and_keeps_the_queued_ones(make_app: Any) -> None:
    import os
    import time

    app = make_app()
    post(app.test_client(), *multipart(encoded(make_study(1)[0])))
    node = app.extensions["scantune.dicom"]
    spool = Path(node.settings.dicom_spool_dir)
    (queued,) = spool.glob("*.dcm")
    orphan = spool / "0123456789abcdef0123456789abcdef.dcm"  # written, then the node died
    orphan.write_bytes(b"DICM")
    fresh = spool / "fedcba9876543210fedcba9876543210.dcm"  # being written right now
    fresh.write_bytes(b"DICM")
    partial = spool / ".abc.dcm.part"
    partial.write_bytes(b"DI")
    old = time.time() - 3600
    for path in (queued, orphan):
        os.utime(path, (old, old))
    node.worker.sweep_leftovers()
    assert sorted(p.name for p in spool.iterdir()) == sorted([queued.name, fresh.name])
