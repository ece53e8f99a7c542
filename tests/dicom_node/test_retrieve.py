"""Fetching a study the PACS holds: `POST /v1/retrievals` has the node C-MOVE it from Orthanc
(a real PACS, its Query/Retrieve SCP), Orthanc sends the instances to the node over C-STORE,
and the study is classified and its SR delivered like any other; the errors a caller can act
on (no such study, a source that is down or may not send to the node, an unknown source);
retrievals in the background (`wait: false`) followed by their id."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests
from sqlalchemy.orm import Session

from service.auth import hash_key
from service.cli import main
from tests.dicom_node.conftest import OPS_KEY, STOW_KEY
from tests.dicom_node.parts import (
    MODALITY_AE,
    PACS_AE,
    Gunicorn,
    Orthanc,
    make_study,
    store_in_pacs,
    wait_until,
)
from tests.dicom_node.test_contract import SCHEMA
from tests.dicom_node.test_e2e import QUIET_S, SLACK_S, referenced

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
RETRIEVE_KEY = "retrieve-key-for-the-node"
KEYS = [
    {"name": "ris", "sha256": hash_key(RETRIEVE_KEY), "scopes": ["series:retrieve"]},
    {"name": "ops", "sha256": hash_key(OPS_KEY), "scopes": ["series:read"]},
    {"name": "stow-client", "sha256": hash_key(STOW_KEY), "scopes": ["predict"]},
]


def retrieve(node: Gunicorn, key: str = RETRIEVE_KEY, **body: Any) -> requests.Response:
    return requests.post(
        f"{node.url}/v1/retrievals",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )


def source(orthanc: Orthanc) -> dict[str, Any]:
    return {"name": "pacs", "ae_title": PACS_AE, "host": "127.0.0.1", "port": orthanc.dicom_port}


def test_a_study_the_pacs_holds_is_fetched_classified_and_its_result_sent_back(
    make_node: Callable[..., Gunicorn], orthanc: Orthanc, capsys: pytest.CaptureFixture[str]
) -> None:
    node = make_node(dicom_sources=[source(orthanc)], api_keys=KEYS).start()
    prior, other = make_study(2, series=2), make_study(1)
    for ds in other:
        ds.AccessionNumber = "RIS-2046"  # as the RIS knows the exam
    store_in_pacs(orthanc.url, prior + other)

    answer = retrieve(node, source="pacs", study_instance_uid=prior[0].StudyInstanceUID)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "source": "pacs",
        "study_instance_uids": [prior[0].StudyInstanceUID],
        "series_instance_uid": None,
        "accession_number": None,
        "completed": 2,
        "failed": 0,
        "warning": 0,
    }
    operation: Any = SCHEMA["/v1/retrievals"]["POST"]
    operation.validate_response(answer)

    def both_reports() -> list[Any]:  # one SR per series, both in the study
        found = orthanc.reports(prior[0].StudyInstanceUID)
        return found if len(found) == 2 else []

    reports = wait_until(both_reports, QUIET_S + SLACK_S, "an SR of each series reaches Orthanc")
    assert set().union(*(referenced(r) for r in reports)) == {ds.SOPInstanceUID for ds in prior}
    assert {r.PatientID for r in reports} == {"P-1"}
    listed = requests.get(
        f"{node.url}/v1/series",
        params={"study_instance_uid": other[0].StudyInstanceUID},
        headers={"Authorization": f"Bearer {OPS_KEY}"},
        timeout=10,
    ).json()["items"]
    assert listed == []  # only the study asked for came
    by_number = retrieve(node, source="pacs", accession_number="RIS-2046")
    assert by_number.status_code == 200, by_number.text
    assert by_number.json()["study_instance_uids"] == [other[0].StudyInstanceUID]
    assert by_number.json()["completed"] == 1
    operation.validate_response(by_number)
    wait_until(lambda: orthanc.reports(other[0].StudyInstanceUID), SLACK_S, "its SR in Orthanc")

    one = prior[1]  # one series of the study, asked for again (from the shell): nothing new
    argv = ["series", "retrieve", one.StudyInstanceUID, "--series", one.SeriesInstanceUID]
    assert main([*argv, "--source", "pacs", "--url", node.url, "--api-key", RETRIEVE_KEY]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "pacs sent 1 instance(s), 0 failed; follow them with:",
        f"  scantune series list --study {one.StudyInstanceUID}",
    ]
    assert node.metric("scantune_dicom_instances_received_total", outcome="duplicate") == 1

    missing = retrieve(node, source="pacs", study_instance_uid="1.2.3.4.5.6.7")
    assert missing.status_code == 404, missing.text
    assert missing.json()["detail"] == "source 'pacs' holds no such study"
    unknown = retrieve(node, source="pacs", accession_number="RIS-9999")
    assert unknown.status_code == 404
    assert unknown.json()["detail"] == "source 'pacs' holds no study of that accession number"
    assert node.metric("scantune_dicom_retrievals_total", outcome="ok") == 3
    assert node.metric("scantune_dicom_retrievals_total", outcome="not_found") == 2
    log = node.log_text()
    assert "audit study_retrieved" in log  # who asked for which source, never the UID
    for private in ("P-1", prior[0].StudyInstanceUID, one.SeriesInstanceUID, "RIS-2046"):
        assert private not in log


def test_the_caller_is_told_what_to_fix_when_a_retrieval_cannot_happen(
    make_node: Callable[..., Gunicorn], orthanc: Orthanc
) -> None:
    # Orthanc may not send to the node: only the modality is an allowed caller.
    node = make_node(
        dicom_sources=[source(orthanc)],
        dicom_allowed_callers=[{"ae_title": MODALITY_AE, "host": "127.0.0.1"}],
        api_keys=KEYS,
    ).start()
    study = make_study(1)
    store_in_pacs(orthanc.url, study)
    uid = study[0].StudyInstanceUID

    refused = retrieve(node, source="pacs", study_instance_uid=uid)
    assert refused.status_code == 502, refused.text
    assert "SCANTUNE_DICOM_ALLOWED_CALLERS" in refused.json()["detail"]
    assert refused.headers["Content-Type"] == "application/problem+json"

    unknown = retrieve(node, source="archive", study_instance_uid=uid)
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["loc"] == "body/source"
    assert "the sources: pacs" in unknown.json()["detail"]
    bad = retrieve(node, source="pacs", study_instance_uid="1.2.x")
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == "body/study_instance_uid"
    for body, why in (
        ({}, "give study_instance_uid or accession_number"),
        ({"study_instance_uid": uid, "accession_number": "A1"}, "(one of them)"),
        ({"accession_number": "A1", "series_instance_uid": uid}, "goes with study_instance_uid"),
        ({"accession_number": "A\\1"}, "accession_number"),  # a backslash: not an SH value
    ):
        wrong = retrieve(node, source="pacs", **body)
        assert wrong.status_code == 422 and why in wrong.json()["detail"], wrong.text
    assert retrieve(node, key=OPS_KEY, source="pacs", study_instance_uid=uid).status_code == 403

    orthanc.stop()
    down = retrieve(node, source="pacs", study_instance_uid=uid)
    assert down.status_code == 502
    assert down.json()["detail"] == (
        "source 'pacs' could not be reached or refused the association"
    )
    assert node.metric("scantune_dicom_retrievals_total", outcome="failed") == 2
    assert node.metric("scantune_dicom_series_classified_total") == 0


def test_a_retrieval_in_the_background_answers_at_once_and_says_how_it_went(
    make_node: Callable[..., Gunicorn], orthanc: Orthanc, capsys: pytest.CaptureFixture[str]
) -> None:
    other_key = "another-clients-retrieve-key"
    keys = [*KEYS, {"name": "lab", "sha256": hash_key(other_key), "scopes": ["series:retrieve"]}]
    node = make_node(dicom_sources=[source(orthanc)], api_keys=keys).start()
    study = make_study(2)
    store_in_pacs(orthanc.url, study)
    uid = study[0].StudyInstanceUID

    taken = retrieve(node, source="pacs", study_instance_uid=uid, wait=False)
    assert taken.status_code == 202, taken.text
    SCHEMA["/v1/retrievals"]["POST"].validate_response(taken)
    assert taken.json()["state"] == "running" and taken.json()["finished_at"] is None
    location = f"{node.url}{taken.headers['Location']}"
    assert taken.headers["Location"] == f"/v1/retrievals/{taken.json()['id']}"

    def ended(url: str, key: str = RETRIEVE_KEY) -> dict[str, Any] | None:
        answer = requests.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body if body["state"] != "running" else None

    done = wait_until(lambda: ended(location), SLACK_S, "the retrieval ends")
    assert (done["state"], done["error"], done["completed"]) == ("done", None, 2)
    assert done["study_instance_uids"] == [uid] and done["finished_at"] is not None
    wait_until(lambda: orthanc.reports(uid), QUIET_S + SLACK_S, "its SR reaches Orthanc")
    theirs = requests.get(location, headers={"Authorization": f"Bearer {other_key}"}, timeout=10)
    assert theirs.status_code == 404  # another client's retrieval, as if there were none
    for missing in ("/v1/retrievals/999999", "/v1/retrievals/99999999999"):
        answer = requests.get(
            f"{node.url}{missing}", headers={"Authorization": f"Bearer {RETRIEVE_KEY}"}, timeout=10
        )
        assert answer.status_code == 404, missing

    absent = retrieve(node, source="pacs", study_instance_uid="1.2.3.4.5.6.7", wait=False)
    assert absent.status_code == 202
    gone = wait_until(
        lambda: ended(f"{node.url}/v1/retrievals/{absent.json()['id']}"), SLACK_S, "it ends"
    )
    assert (gone["state"], gone["error"]) == ("not_found", "source 'pacs' holds no such study")
    assert node.metric("scantune_dicom_retrievals_total", outcome="ok") == 1
    assert node.metric("scantune_dicom_retrievals_total", outcome="not_found") == 1

    # the whole study again, the node's SR now in it: its image series are moved, not the SR
    # (Orthanc would fail the whole C-MOVE on the one instance the node does not take)
    argv = ["--url", node.url, "--api-key", RETRIEVE_KEY]
    assert main(["series", "retrieve", uid, "--source", "pacs", "--no-wait", *argv]) == 0
    first, follow = capsys.readouterr().out.splitlines()
    number = first.split()[1]
    assert first == f"retrieval {number} running; follow it with:"
    assert follow == f"  scantune series retrieval {number}"
    again = wait_until(lambda: ended(f"{node.url}/v1/retrievals/{number}"), SLACK_S, "it ends")
    assert again["state"] == "done", (again["error"], again["completed"], again["failed"])
    assert main(["series", "retrieval", number, *argv]) == 0
    assert capsys.readouterr().out.splitlines()[:2] == [
        f"retrieval {number} from pacs: done",
        "  2 instance(s) sent, 0 failed",
    ]

    # the client's retrievals newest first, in one state, page by page; not another's
    def listed(key: str = RETRIEVE_KEY, **query: Any) -> dict[str, Any]:
        answer = requests.get(f"{node.url}/v1/retrievals", params=query, timeout=10,
                              headers={"Authorization": f"Bearer {key}"})  # fmt: skip
        assert answer.status_code == 200, answer.text
        SCHEMA["/v1/retrievals"]["GET"].validate_response(answer)
        body: dict[str, Any] = answer.json()
        return body

    ids = [int(number), absent.json()["id"], taken.json()["id"]]
    assert [r["id"] for r in listed()["items"]] == ids
    assert [r["state"] for r in listed()["items"]] == ["done", "not_found", "done"]
    assert [r["id"] for r in listed(state="not_found")["items"]] == [ids[1]]
    first_page = listed(limit=2)
    assert [r["id"] for r in first_page["items"]] == ids[:2]
    rest = listed(limit=2, cursor=first_page["next_cursor"])
    assert ([r["id"] for r in rest["items"]], rest["next_cursor"]) == (ids[2:], None)
    assert listed(other_key)["items"] == []
    bad = requests.get(f"{node.url}/v1/retrievals", params={"state": "lost"}, timeout=10,
                       headers={"Authorization": f"Bearer {RETRIEVE_KEY}"})  # fmt: skip
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == "query/state"
    assert main(["series", "retrievals", "--state", "not_found", *argv]) == 0
    [header, row] = capsys.readouterr().out.splitlines()
    assert header.split()[:3] == ["ID", "SOURCE", "STATE"]
    assert row.split()[:4] == [str(ids[1]), "pacs", "not_found", "0"]
    assert row.endswith("source 'pacs' holds no such study")

    log = node.log_text()
    for private in ("P-1", uid):
        assert private not in log


def test_retrievals_running_when_the_node_stopped_are_failed_and_cancelling_ones_cancelled(
    tmp_path: Any,
) -> None:
    from service.dicom_node.retrieval_jobs import RetrievalJobs
    from service.dicom_node.retrieve import Asked, Retriever
    from service.dicom_node.tables import RetrievalRow
    from service.jobs.database import make_engine, migrate
    from service.jobs.store import utcnow

    engine = make_engine(f"sqlite:///{tmp_path / 'node.db'}")
    migrate(engine)
    jobs = RetrievalJobs(engine, Retriever("NODE", 5), on_done=lambda *_: None)
    with Session(engine) as session, session.begin():
        asked = Asked(study_uid="1.2.3")
        session.add(RetrievalRow(source="pacs", study_uid=asked.study_uid, client="ris",
                                 state="running", created_at=utcnow()))  # fmt: skip
        session.add(RetrievalRow(source="pacs", study_uid="1.2.4", client="ris",
                                 state="cancelling", created_at=utcnow()))  # fmt: skip
    assert jobs.recover() == 2
    view = jobs.get(1, "ris")
    assert view is not None and view["state"] == "failed"
    assert view["error"] == "the node stopped during the retrieval; ask again"
    stopped = jobs.get(2, "ris")  # its C-MOVE went with the process: it has stopped
    assert stopped is not None and (stopped["state"], stopped["error"]) == ("cancelled", None)
    assert jobs.get(1, "lab") is None and jobs.get(1, None) is not None
    assert jobs.recover() == 0
    jobs.stop()


def test_a_retrieval_is_cancelled_midway_and_what_came_is_kept(
    make_node: Callable[..., Gunicorn], orthanc: Orthanc, capsys: pytest.CaptureFixture[str]
) -> None:
    other_key = "another-clients-retrieve-key"
    keys = [*KEYS, {"name": "lab", "sha256": hash_key(other_key), "scopes": ["series:retrieve"]}]
    node = make_node(dicom_sources=[source(orthanc)], api_keys=keys).start()
    study = make_study(120, series=4)  # moved series by series, 30 instances each
    store_in_pacs(orthanc.url, study)
    uid = study[0].StudyInstanceUID
    taken = retrieve(node, source="pacs", study_instance_uid=uid, wait=False)
    assert taken.status_code == 202, taken.text
    number = taken.json()["id"]

    def cancel(key: str = RETRIEVE_KEY) -> requests.Response:
        return requests.post(f"{node.url}/v1/retrievals/{number}/cancel", timeout=10,
                             headers={"Authorization": f"Bearer {key}"})  # fmt: skip

    def arrived() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = requests.get(
            f"{node.url}/v1/series", params={"study_instance_uid": uid}, timeout=10,
            headers={"Authorization": f"Bearer {OPS_KEY}"},
        ).json()["items"]  # fmt: skip
        return items

    wait_until(arrived, SLACK_S, "the first instances arrive")  # its C-MOVE is under way
    assert cancel(other_key).status_code == 404  # another client's, as if there were none
    stopping = cancel()
    assert stopping.status_code == 202, stopping.text
    SCHEMA["/v1/retrievals/{retrieval_id}/cancel"]["POST"].validate_response(stopping)
    assert stopping.json()["state"] in ("cancelling", "cancelled")
    assert cancel().status_code in (202, 409)  # asked twice: the same, or it has ended

    def ended() -> dict[str, Any] | None:
        body: dict[str, Any] = requests.get(
            f"{node.url}/v1/retrievals/{number}", timeout=10,
            headers={"Authorization": f"Bearer {RETRIEVE_KEY}"},
        ).json()  # fmt: skip
        return body if body["state"] not in ("running", "cancelling") else None

    done = wait_until(ended, SLACK_S, "the source answers the cancel")
    assert (done["state"], done["error"]) == ("cancelled", None)
    assert done["study_instance_uids"] == [uid] and done["finished_at"] is not None
    assert 0 < done["completed"] < len(study), done  # some came, not all: the rest never will
    late = cancel()
    assert late.status_code == 409 and late.json()["detail"] == (
        f"retrieval {number} has ended: cancelled"
    )
    assert node.metric("scantune_dicom_retrievals_total", outcome="cancelled") == 1
    # what came is the node's like any other, each instance the source counted as sent
    assert sum(series["instances"] for series in arrived()) == done["completed"]
    argv = ["--url", node.url, "--api-key", RETRIEVE_KEY]
    assert main(["series", "cancel-retrieval", str(number), *argv]) != 0
    assert "has ended: cancelled" in capsys.readouterr().err
    assert main(["series", "retrievals", "--state", "cancelled", *argv]) == 0
    [_, row] = capsys.readouterr().out.splitlines()
    assert row.split()[:4] == [str(number), "pacs", "cancelled", str(done["completed"])]


def test_a_cancelled_retrieval_waiting_for_a_thread_never_starts(tmp_path: Any) -> None:
    """Two run at once: a third waits, and cancelled it never asks the source; one that
    ended keeps its outcome. The retriever here stands in for the PACS's pace only: each
    holds until released or cancelled (the C-CANCEL itself is tested against Orthanc)."""
    import threading

    from service.dicom_node.peers import DicomSource
    from service.dicom_node.retrieval_jobs import RUNNING_AT_ONCE, RetrievalJobs
    from service.dicom_node.retrieve import Asked, Retrieved, Retriever
    from service.jobs.database import make_engine, migrate

    release, asked_for = threading.Event(), []

    class Paced(Retriever):
        def retrieve(self, source: Any, asked: Asked, cancel: Any = None) -> Retrieved:
            asked_for.append(asked.study_uid)
            while not (release.is_set() or cancel.is_set()):
                cancel.wait(0.01)
            return Retrieved([str(asked.study_uid)], 3, 0, 0, cancelled=cancel.is_set())

    engine = make_engine(f"sqlite:///{tmp_path / 'node.db'}")
    migrate(engine)
    ended: list[tuple[Any, ...]] = []
    jobs = RetrievalJobs(engine, Paced("NODE", 5), on_done=lambda *done: ended.append(done))
    pacs = DicomSource(name="pacs", ae_title="PACS", host="127.0.0.1", port=104)
    first, second, third = (
        jobs.submit(pacs, Asked(study_uid=f"1.2.{n}"), "ris")["id"] for n in range(3)
    )
    wait_until(lambda: len(asked_for) == RUNNING_AT_ONCE, 10, "two start")
    assert jobs.cancel(third, "lab") is None  # another client's
    view, stopped = jobs.cancel(third, "ris") or ({}, False)
    assert stopped and (view["state"], view["completed"]) == ("cancelled", 0)
    assert view["finished_at"] is not None
    view, stopped = jobs.cancel(first, None) or ({}, False)  # an admin's key sees every one
    assert stopped and view["state"] in ("cancelling", "cancelled")  # it may end at once
    wait_until(lambda: (jobs.get(first, "ris") or {})["state"] == "cancelled", 10, "it stops")
    release.set()
    wait_until(lambda: (jobs.get(second, "ris") or {})["state"] == "done", 10, "it ends")
    assert jobs.cancel(second, "ris") == (jobs.get(second, "ris"), False)  # too late: kept
    assert asked_for == ["1.2.0", "1.2.1"]  # the third was never asked of the source
    assert (jobs.get(first, "ris") or {})["completed"] == 3  # what came before it stopped
    assert sorted(done[2] for done in ended) == ["cancelled", "cancelled", "ok"]
    jobs.stop()


def test_a_series_that_failed_is_fetched_again_and_classified_once_the_route_is_mended(
    make_node: Callable[..., Gunicorn], orthanc: Orthanc, capsys: pytest.CaptureFixture[str]
) -> None:
    """A route naming a model inference does not have fails the series (404, final); with the
    route mended, `scantune series refetch` asks the PACS for the same instances, which are
    classified in a new work item and their SR sent; a series with a result is refused."""
    keys = [*KEYS, {"name": "operator", "sha256": hash_key("operator-key-for-the-node"),
                    "scopes": ["series:read", "series:retrieve"]}]  # fmt: skip
    settings = {"dicom_sources": [source(orthanc)], "api_keys": keys}
    broken = make_node(
        dicom_routes=[{"model": "no-such-model", "modality": "CR"}], **settings
    ).start()
    study = make_study(2)
    store_in_pacs(orthanc.url, study)
    assert retrieve(broken, source="pacs", study_instance_uid=study[0].StudyInstanceUID).ok
    argv = ["--url", broken.url, "--api-key", "operator-key-for-the-node"]

    def series_of(node: Gunicorn) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = requests.get(
            f"{node.url}/v1/series", params={"study_instance_uid": study[0].StudyInstanceUID},
            headers={"Authorization": f"Bearer {OPS_KEY}"}, timeout=10,
        ).json()["items"]  # fmt: skip
        return found

    [failed] = wait_until(
        lambda: [s for s in series_of(broken) if s["state"] == "failed"] or None,
        QUIET_S + SLACK_S, "the series fails",
    )  # fmt: skip
    broken.stop()
    node = make_node(**settings).start()  # the route mended: the fixture's model, production
    argv = ["--url", node.url, "--api-key", "operator-key-for-the-node"]
    assert failed["source"] == "pacs"  # Orthanc sent it under its AE title: a known source
    assert main(["series", "refetch", str(failed["id"]), *argv]) == 0  # from there again
    assert capsys.readouterr().out.startswith("pacs sent 2 instance(s), 0 failed")
    wait_until(lambda: orthanc.reports(study[0].StudyInstanceUID), QUIET_S + SLACK_S, "its SR")
    again = [s for s in series_of(node) if s["id"] != failed["id"]]
    assert [(s["generation"], s["instances"]) for s in again] == [(2, 2)]
    wait_until(lambda: series_of(node)[0]["state"] == "done", SLACK_S, "delivered")
    assert main(["series", "refetch", str(again[0]["id"]), "--source", "pacs", *argv]) == 2
    assert "only one that ended unclassified" in capsys.readouterr().err
