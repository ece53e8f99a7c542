"""The node's series routes through the app factory (the SCP and worker not started): what a
study sent by STOW-RS became, filtered by study and state (and by the model version that
classified it), its deliveries with their errors,
send-now skipping a back-off, and the scopes each route needs."""

from __future__ import annotations

from typing import Any

import pytest

from service.auth import hash_key
from service.dicom_node.app import EXTENSION
from tests.dicom_node.parts import make_study
from tests.dicom_node.test_app import KEY, encoded, multipart, post
from tests.dicom_node.test_app import make_app as make_app  # the fixture

READ, ADMIN, CLIENT = "reader-key", "admin-key", "a-clients-key"
KEYS = [
    {"name": "pacs", "sha256": hash_key(KEY), "scopes": ["predict"]},
    {"name": "ops", "sha256": hash_key(READ), "scopes": ["series:read"]},
    {"name": "admin", "sha256": hash_key(ADMIN), "scopes": ["series:read", "admin"]},
    {"name": "ci", "sha256": hash_key(CLIENT), "scopes": ["read", "jobs:write"]},
]
DESTINATIONS = [
    {"ae_title": "PACS", "host": "10.1.2.4", "port": 104},
    {"hl7": {"host": "engine", "port": 6661, "receiving_application": "RIS"}},
]


def _get(client: Any, url: str, key: str = READ) -> Any:
    return client.get(url, headers={"Authorization": f"Bearer {key}"})


@pytest.fixture
def node(make_app: Any) -> Any:
    return make_app(api_keys=KEYS, dicom_destinations=DESTINATIONS)


def _sent(node: Any, count: int) -> list[Any]:
    study = make_study(count)
    answer = post(node.test_client(), *multipart(*(encoded(ds) for ds in study)))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return study


def test_a_study_sent_is_listed_with_its_instances_and_filtered_by_study(node: Any) -> None:
    first, second = _sent(node, 2), _sent(node, 3)
    client = node.test_client()
    listed = _get(client, "/v1/series")
    assert listed.status_code == 200
    items = listed.json["items"]
    assert [i["study_instance_uid"] for i in items] == [
        second[0].StudyInstanceUID,
        first[0].StudyInstanceUID,
    ]  # fmt: skip  (newest first)
    assert [(i["state"], i["instances"], i["calling_ae"]) for i in items] == [
        ("receiving", 3, "pacs"), ("receiving", 2, "pacs"),
    ]  # fmt: skip
    assert items[0]["model"] == "chest-xray" and items[0]["deliveries"] == []
    assert items[0]["destinations"] is None  # its route names none: every destination
    one = _get(client, f"/v1/series?study_instance_uid={first[0].StudyInstanceUID}").json
    assert [i["series_instance_uid"] for i in one["items"]] == [first[0].SeriesInstanceUID]
    assert _get(client, "/v1/series?state=failed").json["items"] == []
    page = _get(client, "/v1/series?limit=1").json
    rest = _get(client, f"/v1/series?limit=1&cursor={page['next_cursor']}").json
    assert [page["items"][0]["id"], rest["items"][0]["id"]] == [i["id"] for i in items]
    assert rest["next_cursor"] is None
    assert _get(client, f"/v1/series/{items[1]['id']}").json == items[1]
    assert _get(client, "/v1/series/999").status_code == 404
    assert _get(client, f"/v1/series/{2**40}").status_code == 404  # past the id column's range
    bad = _get(client, "/v1/series?study_instance_uid=1.2.x")
    assert bad.status_code == 422 and bad.json["errors"][0]["loc"].startswith("query")


def test_a_recalled_versions_results_are_found_by_model_and_version(node: Any) -> None:
    for _ in range(3):
        _sent(node, 1)
    queue, client = node.extensions[EXTENSION].queue, node.test_client()
    third, second, first = (s["id"] for s in _get(client, "/v1/series").json["items"])
    queue.classified(first, "2.25.1", "one.sr.dcm", [], version=3)
    queue.classified(second, "2.25.2", "two.sr.dcm", [], version=4)  # after a promotion
    listed = _get(client, "/v1/series?model=chest-xray&version=3").json["items"]
    assert [(s["id"], s["version"], s["result_sop_instance_uid"]) for s in listed] == [
        (first, 3, "2.25.1")
    ]  # fmt: skip
    routed = _get(client, "/v1/series?model=chest-xray").json["items"]
    assert [(s["id"], s["version"]) for s in routed] == [(third, None), (second, 4), (first, 3)]
    assert _get(client, "/v1/series?model=knee-mri").json["items"] == []
    alone = _get(client, "/v1/series?version=3")
    assert alone.status_code == 422 and "version needs model" in alone.json["detail"]


def test_a_series_shows_where_its_route_sends_it_before_its_result_is_made(
    make_app: Any, capsys: Any
) -> None:
    named = [{"name": "pacs", **DESTINATIONS[0]}, {"name": "ris", **DESTINATIONS[1]}]
    route = {"model": "chest-xray", "calling_ae": "pacs", "destinations": ["ris"]}
    node = make_app(api_keys=KEYS, dicom_destinations=named, dicom_routes=[route])
    _sent(node, 1)  # by STOW-RS with the key named pacs, which stands for the calling AE
    (series,) = _get(node.test_client(), "/v1/series").json["items"]
    assert (series["state"], series["destinations"]) == ("receiving", ["mllp://engine:6661/RIS"])
    from service.commands.series import _print

    assert _print(series, raw=False) == 0
    assert "sends to      mllp://engine:6661/RIS" in capsys.readouterr().out


def test_deliveries_show_their_errors_and_send_now_skips_the_back_off(node: Any) -> None:
    _sent(node, 1)
    queue = node.extensions[EXTENSION].queue
    client = node.test_client()
    series_id = _get(client, "/v1/series").json["items"][0]["id"]
    destinations = [s for s in node.extensions[EXTENSION].worker.senders]
    queue.classified(series_id, "2.25.1", "result.sr.dcm", destinations)
    due = {d.destination: d.delivery_id for d in queue.due_deliveries()}
    queue.delivery_failed(due["mllp://engine:6661/RIS"], "HL7 ACK AE", 300)
    assert queue.delivered(due["PACS@10.1.2.4:104"]) is None  # the engine's is pending
    view = _get(client, f"/v1/series/{series_id}").json
    assert view["state"] == "delivering" and view["result_sop_instance_uid"] == "2.25.1"
    pacs, engine = view["deliveries"]
    assert (pacs["state"], pacs["next_attempt_at"], pacs["delivered_at"] is not None) == (
        "done", None, True,
    )  # fmt: skip
    assert (engine["state"], engine["attempts"], engine["last_error"]) == (
        "pending", 1, "HL7 ACK AE",
    )  # fmt: skip
    assert queue.due_deliveries() == []  # backing off for 300 s

    assert client.post(f"/v1/series/{series_id}/send-now", headers=_auth(READ)).status_code == 403
    sent = client.post(f"/v1/series/{series_id}/send-now", headers=_auth(ADMIN))
    assert sent.status_code == 200 and sent.json["deliveries"][1]["state"] == "pending"
    assert [d.destination for d in queue.due_deliveries()] == ["mllp://engine:6661/RIS"]

    queue.delivered(queue.due_deliveries()[0].delivery_id)
    assert _get(client, f"/v1/series/{series_id}").json["state"] == "done"
    done = client.post(f"/v1/series/{series_id}/send-now", headers=_auth(ADMIN))
    assert done.status_code == 409 and "nothing left to send" in done.json["detail"]


def test_a_classification_waiting_to_be_retried_is_tried_now(node: Any) -> None:
    _sent(node, 1)
    queue = node.extensions[EXTENSION].queue
    series_id = _get(node.test_client(), "/v1/series").json["items"][0]["id"]
    assert queue.claim_quiet(0) is not None
    queue.retry_later(series_id, "inference unreachable", 300)
    assert queue.claim_quiet(0) is None
    view = _get(node.test_client(), f"/v1/series/{series_id}").json
    assert (view["state"], view["attempts"], view["last_error"]) == (
        "receiving", 1, "inference unreachable",
    )  # fmt: skip
    answer = node.test_client().post(f"/v1/series/{series_id}/send-now", headers=_auth(ADMIN))
    assert answer.status_code == 200
    claimed = queue.claim_quiet(0)  # due now, not in 300 s
    assert claimed is not None and claimed.id == series_id


def test_a_rejected_series_is_sent_again_while_its_result_is_kept(node: Any) -> None:
    _sent(node, 1)
    queue = node.extensions[EXTENSION].queue
    client = node.test_client()
    series_id = _get(client, "/v1/series").json["items"][0]["id"]
    destinations = list(node.extensions[EXTENSION].worker.senders)
    queue.classified(series_id, "2.25.1", "result.sr.dcm", destinations)
    due = {d.destination: d.delivery_id for d in queue.due_deliveries()}
    queue.delivered(due["PACS@10.1.2.4:104"])
    queue.delivery_rejected(due["mllp://engine:6661/RIS"], "HL7 ACK CR")
    view = _get(client, f"/v1/series/{series_id}").json
    engine = view["deliveries"][1]
    assert (view["state"], engine["state"], engine["next_attempt_at"]) == (
        "rejected",
        "rejected",
        None,
    )
    assert _get(client, "/v1/series?state=rejected").json["items"][0]["id"] == series_id
    sent = client.post(f"/v1/series/{series_id}/send-now", headers=_auth(ADMIN))
    assert sent.status_code == 200 and sent.json["state"] == "delivering"
    assert [d.destination for d in queue.due_deliveries()] == ["mllp://engine:6661/RIS"]
    queue.delivery_rejected(queue.due_deliveries()[0].delivery_id, "HL7 ACK CR")
    queue.forget_files(series_id)  # the retention limit passed: its result deleted
    gone = client.post(f"/v1/series/{series_id}/send-now", headers=_auth(ADMIN))
    assert gone.status_code == 409 and "deleted at the retention limit" in gone.json["detail"]


def test_each_route_asks_for_its_scope(node: Any) -> None:
    client = node.test_client()
    assert client.get("/v1/series").status_code == 401
    assert _get(client, "/v1/series", key=KEY).status_code == 403  # predict only: STOW-RS
    # A client's read key sees its own jobs; no client owns the PACS's series.
    refused = _get(client, "/v1/series/1", key=CLIENT)
    assert refused.status_code == 403 and "series:read" in refused.json["detail"]
    assert _get(client, "/v1/series", key=ADMIN).status_code == 200


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
