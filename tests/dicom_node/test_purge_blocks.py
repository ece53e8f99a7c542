"""A purge blocks its study, on SQLite and the real PostgreSQL: the study's instances sent
again over C-STORE (pynetdicom) and STOW-RS are acknowledged, never written, counted (the
metric at once, the purge every few seconds); `block: false` lets them in as before; a
release lets the study in again, audited; a second process learns of a block (and of its
release) within the refresh interval, and one that has yet to read a block writes nothing
of the study all the same (the write checks the database); a series that came in as the
purge was made is purged as it is applied, or by the worker as it claims it. Retrievals and
orders do not fetch a blocked study (Orthanc as the PACS). The migration adds the block to
the purges made before it, as none."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from flask import Flask
from prometheus_client import REGISTRY
from sqlalchemy import Engine, select, text

from service.audit import hash_uid
from service.auth import hash_key
from service.dicom_node.app import EXTENSION, NodeServices
from service.dicom_node.intake import Intake
from service.dicom_node.order_fetcher import OrderFetcher
from service.dicom_node.peers import DicomRoute
from service.dicom_node.purge_blocks import PurgeBlocks
from service.dicom_node.purges import PurgeBook
from service.dicom_node.queue import WorkQueue
from service.dicom_node.routing import Router
from service.dicom_node.spool import Spool
from service.dicom_node.tables import OrderRow, PurgeRow
from service.jobs.database import MIGRATIONS
from tests.dicom_node.parts import PACS_AE, Orthanc, make_study, send, store_in_pacs, wait_until
from tests.dicom_node.test_app import encoded, multipart, post
from tests.dicom_node.test_purges import meta, naming, quiet

SALT = "salt-of-the-block-tests"
ADMIN, OPS, STOW = "block-admin-key", "block-ops-key", "block-stow-key"
KEYS = [
    {"name": "safety-officer", "sha256": hash_key(ADMIN), "scopes": ["admin"]},
    {"name": "ops", "sha256": hash_key(OPS), "scopes": ["series:read", "series:retrieve"]},
    {"name": "pacs", "sha256": hash_key(STOW), "scopes": ["predict"]},
]
STUDY = "1.2.826.9.1"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def received(via: str, outcome: str) -> float:
    labels = {"via": via, "outcome": outcome}
    return REGISTRY.get_sample_value("scantune_dicom_instances_received_total", labels) or 0.0


def purges_applied(blocked: str) -> float:
    found = REGISTRY.get_sample_value("scantune_dicom_purges_total", {"blocked": blocked})
    return found or 0.0


@pytest.fixture
def make_app(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, node_dicom_port: int
) -> Iterator[Callable[..., Flask]]:
    """Builds the node's app in this process on the test's database, its SCP listening (on
    the port Orthanc knows the node by), its queue worker not started: the tests step it."""
    from service.dicom_node.app import create_app

    made: list[Flask] = []

    def make(**settings: Any) -> Flask:
        values: dict[str, Any] = {
            "database_url": engine.url.render_as_string(hide_password=False),
            "dicom_spool_dir": str(tmp_path / "spool"),
            "dicom_routes": [{"model": "chest-xray", "modality": "CR"}],
            "dicom_allowed_callers": [
                {"ae_title": "MODALITY", "host": "127.0.0.1"},
                {"ae_title": PACS_AE, "host": "127.0.0.1"},
            ],
            "dicom_sources": [{"name": "pacs", "ae_title": PACS_AE, "host": "127.0.0.1",
                               "port": 1}],  # nothing there: a test that fetches names Orthanc
            "dicom_series_quiet_s": 0.5,
            "api_keys": KEYS,
            "audit_salt": SALT,
            **settings,
        }  # fmt: skip
        for key, value in values.items():
            monkeypatch.setenv(
                f"SCANTUNE_{key.upper()}", value if isinstance(value, str) else json.dumps(value)
            )
        app = create_app(start=False)
        app.testing = True
        node: NodeServices = app.extensions[EXTENSION]
        node.dicom_port = node.scp.start("127.0.0.1", node_dicom_port)
        node.worker.purges.blocks.refresh_s = 3600  # read again only when a test says so
        made.append(app)
        return app

    yield make
    for app in made:
        services(app).scp.stop()
        services(app).worker.stop()


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


def services(app: Flask) -> NodeServices:
    node: NodeServices = app.extensions[EXTENSION]
    return node


def purge(app: Flask, study_uid: str, **body: Any) -> dict[str, Any]:
    asked = {"study_instance_uid": study_uid, "reason": "declined AI processing", **body}
    made = app.test_client().post("/v1/purges", json=asked, headers=bearer(ADMIN))
    assert made.status_code == 202, made.get_data(as_text=True)
    view: dict[str, Any] = made.get_json()
    return view


def shown(app: Flask, purge_id: int) -> dict[str, Any]:
    view: dict[str, Any] = app.test_client().get(f"/v1/purges/{purge_id}", headers=bearer(OPS)).json
    return view


def spool(app: Flask) -> list[str]:
    folder = Path(services(app).settings.dicom_spool_dir)
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def series_of(app: Flask, study_uid: str) -> list[dict[str, Any]]:
    answer = app.test_client().get(
        f"/v1/series?study_instance_uid={study_uid}", headers=bearer(OPS)
    )
    items: list[dict[str, Any]] = answer.json["items"]
    return items


def audited(caplog: pytest.LogCaptureFixture, action: str) -> list[dict[str, Any]]:
    """The audit records of `action` made during the test."""
    records = [getattr(r, "audit", {}) for r in caplog.records if r.name == "scantune.audit"]
    return [record for record in records if record.get("action") == action]


def stow(app: Flask, *datasets: Any) -> Any:
    return post(app.test_client(), *multipart(*(encoded(ds) for ds in datasets)), key=STOW)


def test_a_blocked_study_sent_again_over_c_store_and_stow_is_acknowledged_and_never_kept(
    app: Flask,
) -> None:
    node = services(app)
    study, other = make_study(3), make_study(1)
    study_uid = study[0].StudyInstanceUID
    view = purge(app, study_uid)
    assert (view["blocked"], view["dropped_after"]) == (True, {"count": 0, "last_at": None})
    assert (view["released_at"], view["released_by"], view["released_reason"]) == (None,) * 3
    counted = {via: received(via, "purged") for via in ("dimse", "stow")}
    stored = received("dimse", "stored")

    assert send(node.dicom_port or 0, study[:2]) == [0, 0]  # Success: a PACS does not retry
    answer = stow(app, study[2])
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert "00081198" not in answer.json  # no Failed SOP Sequence: taken, as far as it knows
    assert spool(app) == [] and series_of(app, study_uid) == []
    assert naming(node.queue.engine, study_uid) == []  # not even an unrouted series' row
    assert received("dimse", "purged") - counted["dimse"] == 2
    assert received("stow", "purged") - counted["stow"] == 1
    assert received("dimse", "stored") == stored

    view = shown(app, view["id"])  # counted in memory, shown at once
    assert view["dropped_after"]["count"] == 3 and view["dropped_after"]["last_at"] is not None
    with node.queue.engine.connect() as conn:  # not a write an instance: with the refresh
        assert conn.scalar(select(PurgeRow.dropped)) == 0
    node.worker.purges.blocks.refresh()
    with node.queue.engine.connect() as conn:
        assert conn.execute(select(PurgeRow.dropped, PurgeRow.dropped_at)).one()[0] == 3
    assert shown(app, view["id"])["dropped_after"] == view["dropped_after"]  # not twice

    assert send(node.dicom_port or 0, other) == [0]  # another study comes in as ever
    assert len(series_of(app, other[0].StudyInstanceUID)) == 1
    applied = purges_applied("true")
    node.worker.step()  # applies the purge; the block stays
    assert purges_applied("true") - applied == 1
    view = shown(app, view["id"])
    assert (view["state"], view["blocked"], view["series"]) == ("done", True, 0)
    assert send(node.dicom_port or 0, study[:1]) == [0] and series_of(app, study_uid) == []


def test_a_purge_made_with_block_false_lets_the_study_in_again_as_before(app: Flask) -> None:
    node = services(app)
    study = make_study(2)
    study_uid = study[0].StudyInstanceUID
    assert send(node.dicom_port or 0, study[:1]) == [0]
    view = purge(app, study_uid, block=False)
    assert (view["blocked"], view["released_at"]) == (False, None)
    applied = purges_applied("false")
    node.worker.step()
    assert purges_applied("false") - applied == 1
    assert shown(app, view["id"])["series"] == 1 and series_of(app, study_uid) == []

    assert send(node.dicom_port or 0, study) == [0, 0]  # a new arrival, as before blocks
    [again] = series_of(app, study_uid)
    assert again["state"] == "receiving" and again["instances"] == 2
    assert shown(app, view["id"])["dropped_after"]["count"] == 0
    refused = app.test_client().post(
        f"/v1/purges/{view['id']}/release", json={"reason": "x"}, headers=bearer(ADMIN)
    )
    assert refused.status_code == 409
    assert refused.json["detail"] == (
        f"purge {view['id']} blocks nothing: made with block false, or released"
    )


def test_a_release_lets_the_study_in_again_and_is_audited(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    node = services(app)
    study = make_study(2)
    study_uid = study[0].StudyInstanceUID
    first = purge(app, study_uid)
    second = purge(app, study_uid, reason="purged again")  # allowed: the block stays
    assert stow(app, study[0]).status_code == 200
    counts = [shown(app, p["id"])["dropped_after"]["count"] for p in (first, second)]
    assert counts == [0, 1]  # counted with the newest purge that blocks the study
    client = app.test_client()
    url = f"/v1/purges/{first['id']}/release"
    assert client.post(url, json={"reason": "x"}, headers=bearer(OPS)).status_code == 403
    bad = client.post(url, json={"reason": ""}, headers=bearer(ADMIN))
    assert bad.status_code == 422 and [e["loc"] for e in bad.json["errors"]] == ["body/reason"]
    assert client.post("/v1/purges/999/release", json={"reason": "x"},
                       headers=bearer(ADMIN)).status_code == 404  # fmt: skip

    with caplog.at_level(logging.INFO, "scantune.audit"):
        released = client.post(url, json={"reason": "purged in error"}, headers=bearer(ADMIN))
    assert released.status_code == 200, released.get_data(as_text=True)
    view = released.json
    assert (view["blocked"], view["released_by"], view["released_reason"]) == (
        False, "safety-officer", "purged in error",
    )  # fmt: skip
    assert view["released_at"] is not None and view["dropped_after"]["count"] == 0
    assert shown(app, second["id"])["blocked"] is False  # the study's block ends whole
    [record] = audited(caplog, "study_purge_released_at_node")
    assert (record["client"], record["target"], record["outcome"]) == (
        "safety-officer", f"purge {first['id']}", "ok",
    )  # fmt: skip
    assert record["detail"] == {
        "studies": [hash_uid(study_uid, SALT)], "reason": "purged in error"
    }  # fmt: skip
    assert study_uid not in caplog.text

    again = client.post(url, json={"reason": "twice"}, headers=bearer(ADMIN))
    assert again.status_code == 409 and again.json["title"] and "blocks nothing" in again.text
    assert client.post(f"/v1/purges/{second['id']}/release", json={"reason": "x"},
                       headers=bearer(ADMIN)).status_code == 409  # fmt: skip
    assert send(node.dicom_port or 0, study) == [0, 0]
    [back] = series_of(app, study_uid)
    assert back["instances"] == 2 and len(spool(app)) == 2


def test_a_block_and_its_release_reach_another_process_within_the_refresh_interval(
    engine: Engine, tmp_path: Path
) -> None:
    """Two node processes over one database (their books, each with its lock), B reading
    the blocks again every half second; an instance sent to B is dropped once B knows."""
    here = PurgeBook(engine, threading.Lock(), [SALT])
    there = PurgeBook(engine, threading.Lock(), [SALT])
    there.blocks.refresh_s = 0.5
    router = Router([DicomRoute(model="chest-xray", modality="CR")])
    intake = Intake(router, Spool(tmp_path / "spool"), WorkQueue(engine), there.blocks)
    assert there.blocks.blocking(STUDY) is None

    purge_id = here.request(STUDY, "declined AI processing", "ops")
    assert here.blocks.blocking(STUDY) == purge_id  # at once where it was made
    started = time.monotonic()
    wait_until(lambda: there.blocks.blocking(STUDY) == purge_id, 5, "the block seen there")
    assert time.monotonic() - started < 0.5 + 1.0
    assert intake.accept(b"never written", meta(1, 1, STUDY), "stow") == "purged"
    assert not (tmp_path / "spool").exists() or not list((tmp_path / "spool").iterdir())
    there.blocks.dropped(purge_id)
    here.blocks.dropped(purge_id)
    there.blocks.refresh()  # writes its two
    view = here.get(purge_id)
    assert view is not None and view["dropped_after"]["count"] == 3  # two written, one here

    assert there.blocks.release(purge_id, "purged in error", "ops") is not None
    assert there.blocks.blocking(STUDY) is None  # at once where it was released
    here.blocks.refresh_s = 0.5
    wait_until(lambda: here.blocks.blocking(STUDY) is None, 5, "the release seen here")
    assert intake.accept(b"x" * 8, meta(1, 2, STUDY), "stow") == "stored"


@pytest.mark.parametrize("modality", ["CR", "MR"])  # routed: an instance kept; not: a row
def test_a_process_that_has_yet_to_read_a_block_writes_nothing_of_the_study(
    engine: Engine, tmp_path: Path, modality: str
) -> None:
    """B read the blocks before A's purge was made and applied, and would not read them again
    for an hour: its intake writes no row of the study all the same (not even an unrouted
    series', which no worker would ever claim and purge), keeps no file, counts the drop with
    the purge, and knows the block from then on."""
    here = PurgeBook(engine, threading.Lock(), [SALT])
    there = PurgeBook(engine, threading.Lock(), [SALT])
    there.blocks.refresh_s = 3600
    router = Router([DicomRoute(model="chest-xray", modality="CR")])
    folder = tmp_path / "spool"
    intake = Intake(router, Spool(folder), WorkQueue(engine), there.blocks)
    assert there.blocks.blocking(STUDY) is None  # read now: not again for an hour
    purge_id = here.request(STUDY, "declined AI processing", "ops")
    assert here.apply_new(lambda name: None) == 1  # applied: nothing of the study held
    assert there.blocks.blocking(STUDY) is None  # B does not know

    dropped = received("stow", "purged")
    instance = replace(meta(1, 1, STUDY), modality=modality)
    assert intake.accept(b"never kept", instance, "stow") == "purged"
    assert naming(engine, STUDY) == [] and (not folder.exists() or not list(folder.iterdir()))
    assert received("stow", "purged") - dropped == 1
    assert there.blocks.blocking(STUDY) == purge_id  # learned from the refused write
    assert intake.accept(b"never kept", replace(instance, series_uid="9.9"), "dimse") == "purged"
    there.blocks.flush()
    assert (here.get(purge_id) or {})["dropped_after"]["count"] == 2
    assert naming(engine, STUDY) == []


def test_a_series_written_as_its_purge_is_applied_is_purged_with_it(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An intake's write that checked the blocks just before the purge was made commits
    while the worker looks for the study, outside the queue's lock: the purge looks again
    under the lock, and the series (an unrouted one, which no worker would claim) goes."""
    queue = WorkQueue(engine)
    book = PurgeBook(engine, queue.lock, [SALT])
    purge_id = book.request(STUDY, "declined AI processing", "ops")
    looked = book._find

    def meanwhile(study_hash: str) -> str | None:
        found = looked(study_hash)
        if found is None and not naming(engine, STUDY):  # checked before the purge, written
            assert queue.note_unrouted(replace(meta(1, 1, STUDY), modality="MR"))
        return found

    monkeypatch.setattr(book, "_find", meanwhile)
    assert book.apply_new(lambda name: None) == 1
    assert naming(engine, STUDY) == []
    assert (book.get(purge_id) or {})["series"] == 1


def test_a_study_purged_under_the_salt_before_a_rotation_stays_blocked(engine: Engine) -> None:
    PurgeBook(engine, threading.Lock(), ["old-salt"]).request(STUDY, "mistake", "ops")
    rotated = PurgeBlocks(engine, ["new-salt", "old-salt"])
    assert rotated.blocking(STUDY) is not None and rotated.blocking("1.2.9") is None


def test_a_study_purged_again_after_a_rotation_is_let_in_by_one_release(engine: Engine) -> None:
    """Purged under the old salt, and again under the new one: the earlier purge takes the
    new hash, so releasing either ends both blocks (else the old one would go on dropping)."""
    first = PurgeBook(engine, threading.Lock(), ["old-salt"]).request(STUDY, "mistake", "ops")
    rotated = PurgeBook(engine, threading.Lock(), ["new-salt", "old-salt"])
    second = rotated.request(STUDY, "declined AI", "ops")
    assert rotated.blocks.blocking(STUDY) == second
    assert rotated.blocks.release(first, "purged in error", "admin") == hash_uid(STUDY, "new-salt")
    assert rotated.blocks.blocking(STUDY) is None
    views = [rotated.get(first), rotated.get(second)]
    assert [(v or {})["blocked"] for v in views] == [False, False]
    alone = PurgeBook(engine, threading.Lock(), ["new-salt", "old-salt"]).request("1.2.9", "x", "o")
    assert rotated.get(alone)["blocked"]  # type: ignore[index]  # another study: untouched


def test_a_series_that_came_in_as_the_purge_was_made_is_purged_as_the_worker_claims_it(
    app: Flask,
) -> None:
    """Stored by a process that had yet to read the block (the race the block closes): the
    worker purges it instead of classifying it, counted with the purge."""
    node = services(app)
    view = purge(app, STUDY)
    node.worker.step()  # applied: nothing of the study yet
    Spool(node.settings.dicom_spool_dir).write(b"late", name="late.dcm")
    node.queue.add_instance(meta(1, 1, STUDY), "chest-xray", None, "late.dcm")
    quiet(node.queue)
    node.worker.step()  # claims it; its slot finds the study blocked
    wait_until(lambda: not naming(node.queue.engine, STUDY), 10, "the late series purged")
    assert spool(app) == []
    [late] = app.test_client().get("/v1/series?state=purged", headers=bearer(OPS)).json["items"]
    assert late["study_instance_uid"] == f"purged:{view['id']}"
    view = shown(app, view["id"])
    assert (view["series"], view["series_stopped"], view["instances_deleted"]) == (1, 1, 1)


def test_a_retrieval_of_a_blocked_study_is_refused_with_the_purge_to_release(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    view = purge(app, STUDY)
    client = app.test_client()
    for wait in (True, False):
        asked = {"source": "pacs", "study_instance_uid": STUDY, "wait": wait}
        with caplog.at_level(logging.INFO, "scantune.audit"):
            refused = client.post("/v1/retrievals", json=asked, headers=bearer(OPS))
        assert refused.status_code == 409, refused.get_data(as_text=True)
        assert refused.json["detail"] == (
            f"the study is blocked at the node by purge {view['id']}: not fetched (an admin"
            f" ends the block with POST /v1/purges/{view['id']}/release)"
        )
    records = audited(caplog, "study_retrieved")
    assert [r["outcome"] for r in records] == ["blocked", "blocked"]
    assert records[0]["detail"]["studies"] == [hash_uid(STUDY, SALT)]
    assert client.get("/v1/retrievals", headers=bearer(OPS)).json["items"] == []  # none started


@pytest.mark.slow
def test_an_accession_number_fetches_its_other_studies_and_an_order_of_only_it_fetches_nothing(
    make_app: Callable[..., Flask], engine: Engine, orthanc: Orthanc
) -> None:
    source = {"name": "pacs", "ae_title": PACS_AE, "host": "127.0.0.1", "port": orthanc.dicom_port}
    app = make_app(dicom_sources=[source])
    node = services(app)
    blocked, kept, alone = make_study(1), make_study(2), make_study(1)
    for ds in blocked + kept:
        ds.AccessionNumber = "ACC-TWO"
    for ds in alone:
        ds.AccessionNumber = "ACC-ONE"
    store_in_pacs(orthanc.url, blocked + kept + alone)
    purge(app, blocked[0].StudyInstanceUID)
    purge(app, alone[0].StudyInstanceUID)
    client = app.test_client()
    asked = {"source": "pacs", "accession_number": "ACC-TWO"}
    answer = client.post("/v1/retrievals", json=asked, headers=bearer(OPS))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.json["study_instance_uids"] == [kept[0].StudyInstanceUID]
    assert answer.json["completed"] == 2
    assert len(spool(app)) == 2 and series_of(app, blocked[0].StudyInstanceUID) == []
    only = client.post("/v1/retrievals", json={**asked, "accession_number": "ACC-ONE"},
                       headers=bearer(OPS))  # fmt: skip
    assert only.status_code == 409 and "every study of that accession number" in only.text

    node.orders.take("ACC-ONE")
    fetcher = OrderFetcher(
        node.orders, node.retriever, node.settings.dicom_sources[0], wait_h=1,
        backoff=lambda attempts: 1.0,
    )  # fmt: skip
    assert fetcher.step()
    with engine.connect() as conn:
        order = conn.execute(select(OrderRow.state, OrderRow.studies, OrderRow.last_error))
        state, studies, error = order.one()
    assert (state, json.loads(studies)) == ("fetched", [])
    assert "blocked at the node by purge" in error
    assert len(spool(app)) == 2
    for ds in blocked + alone:
        assert naming(engine, ds.StudyInstanceUID) == []


def test_the_migration_adds_the_block_as_none_to_the_purges_made_before(engine: Engine) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0016_dicom_purges")
        conn.execute(
            text(
                "INSERT INTO dicom_purges (study_hash, reason, requested_by, state, created_at)"
                " VALUES ('h', 'made before', 'ops', 'done', CURRENT_TIMESTAMP)"
            )
        )
        command.upgrade(config, "head")
    book = PurgeBook(engine, threading.Lock(), [SALT])
    [view] = book.list()
    assert (view["blocked"], view["dropped_after"]) == (False, {"count": 0, "last_at": None})
    assert book.blocks.blocking(STUDY) is None and book.blocks.release(view["id"], "x", "o") is None
