"""The DICOM page's purge release, relayed to the node with the user's key: the node decides
who may release (admin) and refuses a purge that blocks nothing (409, relayed as it is)."""

from __future__ import annotations

from flask.testing import FlaskClient

from tests.training_api.test_ui import _bearer, node_url, relay

__all__ = ["node_url", "relay"]  # the fixtures this module uses


def test_the_dicom_page_relays_a_release_and_the_node_decides_who_may_release(
    relay: FlaskClient,
) -> None:
    client = relay
    (series,) = client.get("/ui/api/series", headers=_bearer("ops")).json["items"]
    asked = {"study_instance_uid": series["study_instance_uid"], "reason": "the wrong patient"}
    made = client.post("/ui/api/purges", json=asked, headers=_bearer("operator"))
    assert made.status_code == 202 and made.json["blocked"] is True
    unblocked = client.post(
        "/ui/api/purges", json={**asked, "block": False}, headers=_bearer("operator")
    )
    assert unblocked.status_code == 202 and unblocked.json["blocked"] is False
    url = f"/ui/api/purges/{made.json['id']}/release"
    refused = client.post(url, json={"reason": "in error"}, headers=_bearer("ops"))
    assert refused.status_code == 403 and "admin" in refused.json["detail"]
    bad = client.post(url, json={"reason": ""}, headers=_bearer("operator"))
    assert bad.status_code == 422 and bad.json["errors"][0]["loc"] == "body/reason"
    released = client.post(url, json={"reason": "in error"}, headers=_bearer("operator"))
    assert released.status_code == 200, released.get_data(as_text=True)
    assert (released.json["blocked"], released.json["released_by"]) == (False, "operator")
    again = client.post(url, json={"reason": "twice"}, headers=_bearer("operator"))
    assert again.status_code == 409 and "blocks nothing" in again.json["detail"]
    nothing = f"/ui/api/purges/{unblocked.json['id']}/release"
    assert (
        client.post(nothing, json={"reason": "x"}, headers=_bearer("operator")).status_code == 409
    )
    listed = client.get("/ui/api/purges", headers=_bearer("ops")).json["items"]
    assert [(p["blocked"], p["released_reason"]) for p in listed] == [
        (False, None),
        (False, "in error"),
    ]
