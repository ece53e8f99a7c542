"""A purge end to end: the node under gunicorn, the inference service classifying, Orthanc as
the PACS. A study still receiving is stopped and its files deleted; one classified while the
PACS is down never reaches it, even once it is back; one delivered is listed with where it
went, and nothing of it is left on disk or in the tables; sent again, the study is dropped
(blocked) until the purge is released. A classification in flight as the
purge lands (held there by a hook around the node's inference client, in process, on SQLite
and PostgreSQL) delivers nothing. The API refuses what it should, and the audit record names
the study by its salted hash only."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, select

from service.audit import hash_uid
from service.dicom_node.tables import DeliveryRow, SeriesRow
from service.jobs.database import make_engine
from tests.dicom_node.conftest import NODE_KEY, OPS_KEY, STOW_KEY
from tests.dicom_node.parts import Gunicorn, Orthanc, make_study, send, wait_until
from tests.dicom_node.test_app import encoded, multipart, post
from tests.dicom_node.test_purges import naming
from tests.dicom_node.test_recall_e2e import ADMIN_KEY, admin_keys, call
from tests.inference.conftest import MODEL

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
SALT = "audit-salt-of-the-node"
SLACK_S = 30.0


def purged(node: Gunicorn, study_uid: str, reason: str = "sent by mistake") -> dict[str, Any]:
    """Purge the study through the API and wait for the worker to apply it: the purge."""
    made = call(
        node, "POST", "/v1/purges", json={"study_instance_uid": study_uid, "reason": reason}
    )
    assert made.status_code == 202, made.text
    assert study_uid not in made.text and hash_uid(study_uid, SALT) not in made.text
    location = made.headers["Location"]
    assert made.json()["state"] == "new" and location == f"/v1/purges/{made.json()['id']}"

    def applied() -> Any:
        view = call(node, "GET", location, OPS_KEY).json()
        return view if view["state"] == "done" else None

    found: dict[str, Any] = wait_until(applied, SLACK_S, "the purge applied")
    return found


def spool_of(node: Gunicorn) -> list[str]:
    return sorted(p.name for p in (node.root.parent / "spool").iterdir())


def database(node: Gunicorn) -> Engine:
    return make_engine(node.env["SCANTUNE_DATABASE_URL"])


def test_a_study_still_receiving_is_stopped_and_its_files_deleted(
    make_node: Callable[..., Gunicorn], orthanc: Orthanc
) -> None:
    node = make_node(dicom_series_quiet_s=600, api_keys=admin_keys(), audit_salt=SALT).start()
    study = make_study(3, series=2)
    study_uid = study[0].StudyInstanceUID
    assert send(node.port_dicom, study) == [0, 0, 0]
    assert len(spool_of(node)) == 3
    series = node.items(f"/v1/series?study_instance_uid={study_uid}", OPS_KEY)
    assert {s["state"] for s in series} == {"receiving"}

    asked = {"study_instance_uid": study_uid, "reason": "the wrong patient"}
    assert call(node, "POST", "/v1/purges", OPS_KEY, json=asked).status_code == 403
    for body, field in (
        ({**asked, "study_instance_uid": "1.2.x"}, "study_instance_uid"),
        ({**asked, "study_instance_uid": "1." * 40 + "1"}, "study_instance_uid"),
        ({"study_instance_uid": study_uid}, "reason"),
        ({**asked, "reason": ""}, "reason"),
        ({**asked, "by": "me"}, "by"),
    ):
        bad = call(node, "POST", "/v1/purges", json=body)
        assert bad.status_code == 422, body
        assert [e["loc"] for e in bad.json()["errors"]] == [f"body/{field}"], body
        assert study_uid not in bad.text
    assert call(node, "GET", "/v1/purges/999", OPS_KEY).status_code == 404
    assert call(node, "GET", "/v1/purges", OPS_KEY).json() == {"items": []}  # none of those

    view = purged(node, study_uid, "the wrong patient")
    assert (view["series"], view["series_stopped"], view["instances_deleted"]) == (2, 2, 3)
    assert (view["requested_by"], view["reason"]) == ("safety-officer", "the wrong patient")
    assert view["delivered"] == [] and view["deliveries_stopped"] == 0
    assert spool_of(node) == []
    assert node.items(f"/v1/series?study_instance_uid={study_uid}", OPS_KEY) == []
    assert {s["state"] for s in node.items("/v1/series?state=purged", OPS_KEY)} == {"purged"}
    assert naming(database(node), study_uid) == []
    [listed] = node.items("/v1/purges", OPS_KEY)
    assert listed == view
    log = node.log_text()
    [audited] = [json.loads(line) for line in log.splitlines() if "study_purged_at_node" in line]
    record = audited["audit"]
    assert (record["client"], record["target"]) == ("safety-officer", f"purge {view['id']}")
    assert record["detail"] == {
        "studies": [hash_uid(study_uid, SALT)], "reason": asked["reason"], "blocked": True
    }  # fmt: skip
    assert study_uid not in log
    assert orthanc.reports(study_uid) == []


def test_a_result_waiting_for_the_pacs_never_reaches_it_once_purged(
    make_node: Callable[..., Gunicorn], orthanc: Orthanc
) -> None:
    """Classified while the PACS is down; purged; the PACS back: another study's result
    waiting beside it arrives, the purged one never does."""
    node = make_node(api_keys=admin_keys(), audit_salt=SALT).start()
    orthanc.stop()
    mistaken, kept = make_study(2), make_study(1)
    mistaken_uid, kept_uid = mistaken[0].StudyInstanceUID, kept[0].StudyInstanceUID
    assert send(node.port_dicom, mistaken + kept) == [0, 0, 0]

    def tried_twice() -> bool:
        series = node.items("/v1/series", OPS_KEY)
        tries = [d["attempts"] for s in series for d in s["deliveries"]]
        return len(tries) == 2 and min(tries) >= 1

    wait_until(tried_twice, SLACK_S, "both results tried while the PACS is down")
    view = purged(node, mistaken_uid)
    assert (view["series"], view["series_stopped"], view["deliveries_stopped"]) == (1, 0, 1)
    assert (view["instances_deleted"], view["results_deleted"], view["delivered"]) == (2, 1, [])
    orthanc.start()
    wait_until(lambda: orthanc.reports(kept_uid), SLACK_S, "the other study's result delivered")
    wait_until(lambda: not spool_of(node), SLACK_S, "the delivered result's files deleted")
    assert orthanc.reports(mistaken_uid) == [] and orthanc.study_count() == 1
    [gone] = node.items("/v1/series?state=purged", OPS_KEY)
    assert [(d["state"], d["next_attempt_at"]) for d in gone["deliveries"]] == [("purged", None)]
    assert gone["study_instance_uid"] == f"purged:{view['id']}"
    assert gone["result_sop_instance_uid"] is None and gone["instances"] == 0
    assert naming(database(node), mistaken_uid) == []


def test_a_delivered_study_is_listed_with_where_it_went_and_nothing_of_it_is_left(
    make_node: Callable[..., Gunicorn], orthanc: Orthanc
) -> None:
    node = make_node(api_keys=admin_keys(), audit_salt=SALT, dicom_recall_keep_h=24).start()
    study = make_study(2)
    study_uid = study[0].StudyInstanceUID
    assert send(node.port_dicom, study) == [0, 0]
    [sr] = wait_until(lambda: orthanc.reports(study_uid), SLACK_S, "the SR at the PACS")
    wait_until(
        lambda: [s for s in node.items("/v1/series", OPS_KEY) if s["state"] == "done"],
        SLACK_S, "the series done",
    )  # fmt: skip
    assert spool_of(node)  # the result is kept for a recall

    view = purged(node, study_uid, "declined AI processing")
    [went] = view["delivered"]
    assert went["destination"] == f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"
    assert went["results"] == 1 and went["first_at"] == went["last_at"]
    assert (view["results_deleted"], view["deliveries_stopped"], view["series_stopped"]) == (
        1,
        0,
        0,
    )
    assert spool_of(node) == []
    assert (
        naming(database(node), study_uid, sr.SOPInstanceUID, *(ds.SOPInstanceUID for ds in study))
        == []
    )
    assert len(orthanc.reports(study_uid)) == 1  # the node cannot take it back: a person must
    assert call(node, "GET", f"/v1/purges/{view['id']}", OPS_KEY).json() == view

    again = make_study(1)  # the study sent again after the purge: blocked, acknowledged
    again[0].StudyInstanceUID = study_uid
    assert send(node.port_dicom, again) == [0]
    dropped = call(node, "GET", f"/v1/purges/{view['id']}", OPS_KEY).json()["dropped_after"]
    assert dropped["count"] == 1 and spool_of(node) == []
    assert node.items(f"/v1/series?study_instance_uid={study_uid}", OPS_KEY) == []
    assert node.metric("scantune_dicom_instances_received_total", outcome="purged") == 1
    assert node.metric("scantune_dicom_purges_total", blocked="true") == 1

    released = call(node, "POST", f"/v1/purges/{view['id']}/release", json={"reason": "error"})
    assert released.status_code == 200 and released.json()["blocked"] is False
    assert send(node.port_dicom, again) == [0]  # let in again: a new arrival
    wait_until(
        lambda: node.items(f"/v1/series?study_instance_uid={study_uid}", OPS_KEY),
        SLACK_S, "the study received again",
    )  # fmt: skip


class HeldClassification:
    """The node's inference client, held once inference has answered (the hook): the test
    purges the study while its series is being classified, then lets the classification end."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.answered, self.go = threading.Event(), threading.Event()

    def classify(self, *args: Any, **kwargs: Any) -> Any:
        found = self.client.classify(*args, **kwargs)
        self.answered.set()
        assert self.go.wait(SLACK_S), "the test never let the classification end"
        return found


@pytest.fixture
def node_in_process(
    engine: Engine,
    tmp_path: Path,
    inference: Gunicorn,
    orthanc: Orthanc,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Flask]:
    """The node's app and its queue worker in this process (the SCP not started), on the
    test's database, delivering to Orthanc."""
    from service.dicom_node.app import EXTENSION, create_app

    values: dict[str, Any] = {
        "database_url": engine.url.render_as_string(hide_password=False),
        "dicom_spool_dir": str(tmp_path / "spool"),
        "dicom_routes": [{"model": MODEL, "alias": "production", "modality": "CR"}],
        "dicom_destinations": [
            {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": orthanc.dicom_port}
        ],
        "dicom_series_quiet_s": 0.5,
        "inference_url": inference.url,
        "dicom_inference_api_key": NODE_KEY,
        "api_keys": admin_keys(),
        "audit_salt": SALT,
    }
    for key, value in values.items():
        monkeypatch.setenv(
            f"SCANTUNE_{key.upper()}", value if isinstance(value, str) else json.dumps(value)
        )
    app = create_app(start=False)
    yield app
    app.extensions[EXTENSION].worker.stop()


def test_a_classification_in_flight_as_the_purge_lands_delivers_nothing(
    node_in_process: Flask, orthanc: Orthanc
) -> None:
    node = node_in_process.extensions["scantune.dicom"]
    held = HeldClassification(node.worker.client)
    node.worker.client = held
    answers: list[bool] = []
    queued = node.queue.classified

    def classified(*args: Any, **kwargs: Any) -> bool:
        answers.append(queued(*args, **kwargs))
        return answers[-1]

    node.queue.classified = classified
    node.worker.start()
    client = node_in_process.test_client()
    study = make_study(2)
    study_uid = study[0].StudyInstanceUID
    assert post(client, *multipart(*(encoded(ds) for ds in study)), key=STOW_KEY).status_code == 200
    assert held.answered.wait(SLACK_S), "the series was never classified"

    asked = {"study_instance_uid": study_uid, "reason": "the wrong patient"}
    made = client.post("/v1/purges", json=asked, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert made.status_code == 202, made.get_data(as_text=True)

    def applied() -> Any:
        view = client.get(made.headers["Location"], headers={"Authorization": f"Bearer {OPS_KEY}"})
        return view.get_json() if view.get_json()["state"] == "done" else None

    view = wait_until(applied, SLACK_S, "the purge applied while the series is classified")
    assert (view["series"], view["series_stopped"], view["instances_deleted"]) == (1, 1, 2)
    assert answers == []  # the classification is still held
    spool = Path(node.settings.dicom_spool_dir)
    assert list(spool.iterdir()) == []

    held.go.set()
    node.worker.stop()  # waits for the classification to end
    assert answers == [False]  # its result refused: the series was purged
    assert list(spool.iterdir()) == []  # the SR it made, deleted
    node.worker.step()  # nothing of it is due
    with node.queue.engine.connect() as conn:
        assert list(conn.execute(select(DeliveryRow))) == []
    assert orthanc.reports(study_uid) == []
    assert naming(node.queue.engine, study_uid) == []
    with node.queue.engine.connect() as conn:
        [series] = conn.execute(select(SeriesRow.state, SeriesRow.result_file)).all()
    assert tuple(series) == ("purged", None)
