"""A recall end to end: the node under gunicorn delivers a series' result to Orthanc (C-STORE)
and to an HL7 receiver, then a recall of the version withdraws it from both (an IOCM
rejection note stored in the study, an ORU posting the result as wrong), deletes the result
it kept for that, and holds back the results of series the version classifies after it;
lifted, it holds back nothing more, and what it did stays. The registry watch follows the
registry both ways, lifting only the recalls it made itself."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hl7
import pytest
import requests
from sqlalchemy import Engine

from service.auth import hash_key
from service.dicom_node.queue import WorkQueue
from service.dicom_node.recalls import RecallBook
from service.dicom_node.registry_watch import RegistryWatch
from tests.dicom_node.conftest import OPS_KEY, SIGNING_KEY, STOW_KEY
from tests.dicom_node.parts import Gunicorn, Orthanc, make_study, send, wait_until
from tests.dicom_node.test_hl7 import Receiver
from tests.dicom_node.test_hl7 import receivers as receivers  # the fixture
from tests.dicom_node.test_recalls import classified
from tests.inference.conftest import MODEL

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
ADMIN_KEY = "admin-key-of-the-node"
NODE_READ_KEY, OWNER_KEY = "node-key-at-the-registry", "owner-key-at-the-registry"
REJECTED_FOR_SAFETY = "113037"
SLACK_S = 30.0


def call(node: Gunicorn, method: str, path: str, key: str = ADMIN_KEY, **kw: Any) -> Any:
    return requests.request(
        method, f"{node.url}{path}", headers={"Authorization": f"Bearer {key}"}, timeout=10, **kw
    )


def admin_keys() -> list[dict[str, Any]]:
    return [
        {"name": "ops", "sha256": hash_key(OPS_KEY), "scopes": ["series:read"]},
        {"name": "stow-client", "sha256": hash_key(STOW_KEY), "scopes": ["predict"]},
        {"name": "safety-officer", "sha256": hash_key(ADMIN_KEY), "scopes": ["admin"]},
    ]


def to_pacs_and_ris(
    make_node: Callable[..., Gunicorn], orthanc: Orthanc, receiver: Receiver, *, maps: bool = False
) -> Gunicorn:
    """A node (started) delivering to Orthanc and to an HL7 receiver (with the attention maps,
    if `maps`), keeping its results a day for recalls, with an admin key."""
    ris = {"host": "127.0.0.1", "port": receiver.port, "attention_maps": maps}
    return make_node(
        dicom_destinations=[
            {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": orthanc.dicom_port},
            {"hl7": ris},
        ],
        dicom_recall_keep_h=24,
        api_keys=admin_keys(),
    ).start()


def done(node: Gunicorn, **params: str) -> list[dict[str, Any]]:
    """The node's series (of a study, with `study_instance_uid`) delivered everywhere."""
    series = call(node, "GET", "/v1/series", OPS_KEY, params=params).json()["items"]
    return [s for s in series if s["state"] == "done"]


def test_a_recall_withdraws_a_delivered_result_from_the_pacs_and_the_ris(
    make_node: Callable[..., Gunicorn],
    orthanc: Orthanc,
    receivers: Callable[..., Receiver],
) -> None:
    receiver = receivers(["AA"])
    node = to_pacs_and_ris(make_node, orthanc, receiver, maps=True)
    study = make_study(2)
    study_uid = study[0].StudyInstanceUID
    assert send(node.port_dicom, study) == [0, 0]
    [sr] = wait_until(lambda: orthanc.reports(study_uid), SLACK_S, "the SR at the PACS")
    [result] = wait_until(receiver.accepted, SLACK_S, "the ORU at the RIS")
    [series] = wait_until(lambda: done(node), SLACK_S, "the series done")
    spool = node.root.parent / "spool"
    assert [p.name for p in spool.iterdir() if p.name.endswith(".sr.dcm")]  # kept for a recall

    assert call(node, "POST", "/v1/recalls", OPS_KEY, json={}).status_code == 403
    bad = call(node, "POST", "/v1/recalls", json={"model": MODEL, "version": 0, "reason": ""})
    assert bad.status_code == 422
    assert {e["loc"] for e in bad.json()["errors"]} == {"body/version", "body/reason"}
    asked = {"model": MODEL, "version": series["version"], "reason": "misses pneumothorax"}
    made = call(node, "POST", "/v1/recalls", json=asked)
    assert made.status_code == 202, made.text
    location = made.headers["Location"]

    def withdrawn() -> Any:
        view = call(node, "GET", location, OPS_KEY).json()
        return view if view["withdrawals"]["done"] == 2 else None

    view = wait_until(withdrawn, SLACK_S, "the result withdrawn from both")
    assert view["state"] == "applied" and view["series"] == 1 and view["open"] == []
    assert view["requested_by"] == "safety-officer" and view["reason"] == asked["reason"]
    [note] = orthanc.instances(study_uid, "KO")
    assert note.ConceptNameCodeSequence[0].CodeValue == REJECTED_FOR_SAFETY
    evidence = note.CurrentRequestedProcedureEvidenceSequence[0]
    referenced = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence
    assert [r.ReferencedSOPInstanceUID for r in referenced] == [sr.SOPInstanceUID]
    assert note.PatientID == sr.PatientID and note.StudyInstanceUID == study_uid
    [_, withdrawal] = wait_until(
        lambda: receiver.accepted()[1:] and receiver.accepted(), 10, "the withdrawal"
    )
    original, voiding = hl7.parse(result.er7), hl7.parse(withdrawal.er7)
    assert withdrawal.control_id != result.control_id
    assert str(voiding.segment("OBR")[3]) == str(original.segment("OBR")[3])  # the same order
    statuses = {str(s[11]) for s in voiding.segments("OBX")}
    assert statuses and "P" not in statuses and "F" not in statuses
    # every row the RIS filed is voided, row for row, the two attention maps included
    rows = [[str(s[i]) for i in (1, 2, 3, 4, 5)] for s in original.segments("OBX")]
    assert sum(row[1] == "ED" for row in rows) == 2
    assert [[str(s[i]) for i in (1, 2, 3, 4, 5)] for s in voiding.segments("OBX")] == rows
    assert "misses pneumothorax" in withdrawal.er7
    recalled = call(node, "GET", f"/v1/series/{series['id']}", OPS_KEY).json()
    assert recalled["state"] == "recalled"
    assert not [p for p in spool.iterdir() if p.name.endswith(".sr.dcm")]  # no longer needed
    assert node.metric("scantune_dicom_withdrawals_total", kind="dimse", outcome="done") == 1
    assert node.metric("scantune_dicom_withdrawals_total", kind="hl7", outcome="done") == 1

    again = call(node, "POST", "/v1/recalls", json={**asked, "reason": "another"})
    assert again.status_code == 200 and again.json()["id"] == view["id"]

    later = make_study(1)  # the registry still serves the version: the node holds it back
    assert send(node.port_dicom, later) == [0]
    wait_until(
        lambda: call(node, "GET", location, OPS_KEY).json()["series"] == 2,
        SLACK_S, "the later series recalled",
    )  # fmt: skip
    [held] = call(
        node, "GET", "/v1/series", OPS_KEY, params={"study_instance_uid": later[0].StudyInstanceUID}
    ).json()["items"]
    assert held["state"] == "recalled"
    assert {d["state"] for d in held["deliveries"]} == {"recalled"}
    assert orthanc.reports(later[0].StudyInstanceUID) == []
    assert len(receiver.received) == 2
    log = node.log_text()
    for value in ("P-1", study_uid, sr.SOPInstanceUID):
        assert value not in log, value


def test_a_recalled_result_sent_over_stow_rs_gets_its_rejection_note_there_once(
    orthanc: Orthanc, tmp_path: Path
) -> None:
    """Over DICOMweb as over DIMSE: the note goes to the PACS's STOW-RS endpoint, in the
    result's study; withdrawn twice (its answer lost), it is the same instance, kept once."""
    from service.dicom_node.delivery import sender_for
    from service.dicom_node.peers import DicomDestination
    from tests.hospital.test_hl7v2 import _sources, _sr

    sr = _sr(_sources())
    path = tmp_path / "result.sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    destination = DicomDestination.model_validate({"stow_url": f"{orthanc.url}/dicom-web"})
    sender = sender_for(destination, "NODE", 10, uid_root="1.2.826.0.1.3680043.10.1234")
    sender.send(path.read_bytes())
    sender.withdraw(path.read_bytes(), [], "wrong laterality")
    sender.withdraw(path.read_bytes(), [], "wrong laterality")
    [note] = orthanc.instances(sr.StudyInstanceUID, "KO")
    assert note.SOPInstanceUID.startswith("1.2.826.0.1.3680043.10.1234.")
    assert note.ConceptNameCodeSequence[0].CodeValue == REJECTED_FOR_SAFETY
    texts = [i.TextValue for i in note.ContentSequence if i.ValueType == "TEXT"]
    assert texts == ["wrong laterality"]


def test_a_lifted_recall_lets_the_version_s_later_results_go_and_keeps_what_it_did(
    make_node: Callable[..., Gunicorn],
    orthanc: Orthanc,
    receivers: Callable[..., Receiver],
) -> None:
    """Lifted while its withdrawal from the RIS is still being tried: a later series of the
    version is delivered, the recalled one stays recalled and its withdrawal goes on, and sent
    again it is read anew; then recalled again, the same recall takes both back."""
    receiver = receivers(["AA", "AE"])  # the result accepted, then the RIS away for a while
    node = to_pacs_and_ris(make_node, orthanc, receiver)
    first = make_study(1)
    first_uid = first[0].StudyInstanceUID
    assert send(node.port_dicom, first) == [0]
    wait_until(lambda: orthanc.reports(first_uid), SLACK_S, "the SR at the PACS")
    [series] = wait_until(lambda: done(node), SLACK_S, "the series done")
    asked = {"model": MODEL, "version": series["version"], "reason": "misses pneumothorax"}
    made = call(node, "POST", "/v1/recalls", json=asked)
    assert made.status_code == 202, made.text
    location, recall_id = made.headers["Location"], made.json()["id"]
    wait_until(lambda: orthanc.instances(first_uid, "KO"), SLACK_S, "the rejection note")

    def ris_tried() -> Any:
        open_ = call(node, "GET", location, OPS_KEY).json()["open"]
        return [w for w in open_ if w["destination"].startswith("mllp") and w["attempts"]]

    wait_until(ris_tried, SLACK_S, "the withdrawal from the RIS tried")

    lift = f"{location}/lift"
    because = {"reason": "reviewed: the misses were a labelling error"}
    assert call(node, "POST", lift, OPS_KEY, json=because).status_code == 403
    for body, field in (({}, "reason"), ({"reason": ""}, "reason"), ({**because, "by": "x"}, "by")):
        bad = call(node, "POST", lift, json=body)
        assert bad.status_code == 422 and [e["loc"] for e in bad.json()["errors"]] == [
            f"body/{field}"
        ], body
    assert call(node, "POST", "/v1/recalls/999/lift", json=because).status_code == 404
    assert call(node, "GET", location, OPS_KEY).json()["state"] == "applied"  # none of these
    lifted = call(node, "POST", lift, json=because)
    assert lifted.status_code == 200, lifted.text
    view = lifted.json()
    assert (view["state"], view["lifted_by"], view["lift_reason"]) == (
        "lifted", "safety-officer", because["reason"],
    )  # fmt: skip
    assert view["lifted_at"] and view["reason"] == asked["reason"]
    twice = call(node, "POST", lift, json=because)
    assert twice.status_code == 409 and twice.headers["Content-Type"] == "application/problem+json"
    assert twice.json()["detail"] == f"recall {recall_id} was lifted already"

    later = make_study(1)  # lifted: the version's result goes out again
    later_uid = later[0].StudyInstanceUID
    assert send(node.port_dicom, later) == [0]
    wait_until(lambda: orthanc.reports(later_uid), SLACK_S, "the later SR at the PACS")
    recalled = call(node, "GET", f"/v1/series/{series['id']}", OPS_KEY).json()
    assert recalled["state"] == "recalled"  # what the recall did stays
    with receiver.lock:  # the RIS back: the withdrawal goes on, the later result goes
        receiver.answers = ["AA"]

    def withdrawn_from_both() -> Any:
        view = call(node, "GET", location, OPS_KEY).json()
        return view if view["withdrawals"]["done"] == 2 else None

    view = wait_until(withdrawn_from_both, SLACK_S, "the withdrawal from the RIS made")
    assert view["state"] == "lifted" and view["series"] == 1 and view["open"] == []
    [delivered] = wait_until(
        lambda: done(node, study_instance_uid=later_uid), SLACK_S, "the later series delivered"
    )
    assert send(node.port_dicom, first) == [0]  # sent again to stand: read anew, a new SR
    [read_again] = wait_until(
        lambda: done(node, study_instance_uid=first_uid), SLACK_S, "the first study read again"
    )
    uid = "result_sop_instance_uid"
    assert read_again["id"] != series["id"] and read_again[uid] != series[uid]
    srs = wait_until(lambda: orthanc.reports(first_uid)[1:] and orthanc.reports(first_uid),
                     SLACK_S, "a second SR at the PACS")  # fmt: skip
    assert len({str(sr.SOPInstanceUID) for sr in srs}) == 2

    again = {**asked, "reason": "misses pneumothorax after all"}
    remade = call(node, "POST", "/v1/recalls", json=again)
    assert remade.status_code == 202 and remade.json()["id"] == recall_id
    assert remade.json()["lifted_at"] is None and remade.json()["reason"] == again["reason"]
    wait_until(lambda: orthanc.instances(later_uid, "KO"), SLACK_S, "the later result withdrawn")

    def applied_again() -> Any:
        view = call(node, "GET", location, OPS_KEY).json()
        return view if view["withdrawals"]["done"] == 6 else None

    view = wait_until(applied_again, SLACK_S, "the three results withdrawn from both")
    assert (view["state"], view["series"], view["requested_by"]) == (
        "applied", 3, "safety-officer",
    )  # fmt: skip
    again_series = call(node, "GET", f"/v1/series/{delivered['id']}", OPS_KEY).json()
    assert again_series["state"] == "recalled"
    log = node.log_text()
    assert "version_recall_lifted_at_node" in log and because["reason"] in log


def at_registry(withdrawal: str, withdrawn: bool, reason: str) -> None:
    """The version's owner withdraws it at the registry, or puts it back in service."""
    answer = requests.put(
        withdrawal, json={"withdrawn": withdrawn, "reason": reason},
        headers={"Authorization": f"Bearer {OWNER_KEY}"}, timeout=10,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text


@pytest.fixture
def training(inference: Gunicorn, tmp_path: Path) -> Iterator[Gunicorn]:
    """The training service over the inference service's registry: the node reads there
    (scope read), the safety officer withdraws (admin)."""
    keys = [
        {"name": "dicom-node", "sha256": hash_key(NODE_READ_KEY), "scopes": ["read"]},
        {"name": "safety-officer", "sha256": hash_key(OWNER_KEY),
         "scopes": ["admin", "models:write"]},
    ]  # fmt: skip
    env = {
        "SCANTUNE_DATABASE_URL": f"sqlite:///{tmp_path / 'training.db'}",
        "SCANTUNE_ARTIFACT_URI": inference.env["SCANTUNE_ARTIFACT_URI"],
        "SCANTUNE_API_KEYS": json.dumps(keys),
        "SCANTUNE_PREDICTION_SIGNING_KEY": SIGNING_KEY,
    }
    server = Gunicorn("training", env, tmp_path / "training").start()
    yield server
    server.stop()


def test_a_version_withdrawn_at_the_registry_is_recalled_at_the_node(
    make_node: Callable[..., Gunicorn], orthanc: Orthanc, training: Gunicorn
) -> None:
    """With dicom_follow_withdrawals the node asks the registry about the versions whose
    results it delivered, and recalls a withdrawn one with the registry's reason."""
    node = make_node(
        dicom_recall_keep_h=24,
        dicom_follow_withdrawals=True,
        dicom_withdrawal_check_s=1,
        training_url=training.url,
        dicom_training_api_key=NODE_READ_KEY,
    ).start()
    study = make_study(1)
    study_uid = study[0].StudyInstanceUID
    assert send(node.port_dicom, study) == [0]
    [sr] = wait_until(lambda: orthanc.reports(study_uid), SLACK_S, "the SR at the PACS")
    [series] = call(node, "GET", "/v1/series", OPS_KEY).json()["items"]
    withdrawal = f"{training.url}/v1/models/{MODEL}/versions/{series['version']}/withdrawal"
    at_registry(withdrawal, True, "misses effusions on portables")
    [note] = wait_until(
        lambda: orthanc.instances(study_uid, "KO"), SLACK_S, "the rejection note at the PACS"
    )
    evidence = note.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == sr.SOPInstanceUID
    [recall] = call(node, "GET", "/v1/recalls", OPS_KEY).json()["items"]
    assert recall["reason"] == "misses effusions on portables"
    assert recall["requested_by"] == "registry (safety-officer)"
    assert "version_recalled_at_node" in node.log_text()
    at_registry(withdrawal, False, "a labelling error, not the model")
    [lifted] = wait_until(
        lambda: [r for r in call(node, "GET", "/v1/recalls", OPS_KEY).json()["items"]
                 if r["state"] == "lifted"],
        SLACK_S, "the recall lifted",
    )  # fmt: skip
    assert lifted["lift_reason"] == "put back in service at the registry"
    assert lifted["lifted_by"] == "registry (safety-officer)"
    assert "version_recall_lifted_at_node" in node.log_text()


def test_the_registry_watch_lifts_the_recalls_it_made_and_never_a_person_s(
    engine: Engine, training: Gunicorn, caplog: pytest.LogCaptureFixture
) -> None:
    """Round by round against the registry: a person's recall stands whatever the registry
    says, and so does a person's lift of a withdrawal the registry made before it; the
    watch's own recall is lifted once the version is back in service, and made anew when the
    registry withdraws it again."""
    queue = WorkQueue(engine)
    book = RecallBook(engine, queue.lock)
    watch = RegistryWatch(book, training.url, NODE_READ_KEY, check_s=60)
    path = f"{training.url}/v1/models/{MODEL}/versions/1/withdrawal"

    def recall() -> dict[str, Any]:
        [only] = book.list()
        return only

    classified(queue, 1, version=1, model=MODEL)  # delivering: the registry is asked about it
    recall_id, _ = book.request(MODEL, 1, "a person's doubt", "safety-officer")
    at_registry(path, True, "misses effusions")
    at_registry(path, False, "a labelling error")
    watch.step()
    assert (recall()["state"], recall()["reason"]) == ("new", "a person's doubt")
    book.lift(recall_id, "reviewed", "safety-officer")
    watch.step()  # in service at the registry: nothing to do
    assert recall()["state"] == "lifted"

    at_registry(path, True, "misses effusions on portables")  # withdrawn after the person's lift
    watch.step()
    view = recall()
    assert (view["state"], view["requested_by"], view["reason"]) == (
        "new", "registry (safety-officer)", "misses effusions on portables",
    )  # fmt: skip
    at_registry(path, False, "a labelling error")
    with caplog.at_level(logging.INFO, logger="scantune.audit"):
        watch.step()
    view = recall()
    assert (view["state"], view["lifted_by"], view["lift_reason"]) == (
        "lifted", "registry (safety-officer)", "put back in service at the registry",
    )  # fmt: skip
    [audited] = [
        r.audit for r in caplog.records  # type: ignore[attr-defined]
        if getattr(r, "audit", {}).get("action") == "version_recall_lifted_at_node"
    ]  # fmt: skip
    assert (audited["client"], audited["target"]) == ("registry", f"model {MODEL} version 1")

    at_registry(path, True, "misses effusions after all")
    watch.step()
    assert (recall()["state"], recall()["reason"]) == ("new", "misses effusions after all")
    book.lift(recall_id, "the board overrules it", "safety-officer")  # still withdrawn there
    watch.step()
    assert (recall()["state"], recall()["lifted_by"]) == ("lifted", "safety-officer")
    at_registry(path, False, "back in service")
