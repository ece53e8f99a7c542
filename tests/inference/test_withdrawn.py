"""A withdrawn version on the inference service: 410 with the reason on v1 predict and V2
infer, by number or through an alias still on it, once the process's word is older than
`access_recheck_s`; other versions are served as before, and a version put back is served."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from service.registry import Registry
from service.withdrawals import Withdrawals
from tests.inference.conftest import MODEL, Trained, publish
from tests.inference.test_model_access import png_form as scan
from tests.inference.test_model_access import v2_bytes_body as v2_body

REASON = "misses small effusions on portable films"


def test_a_withdrawn_version_is_refused_with_its_reason_and_others_still_serve(
    make_client: Callable[..., Any], registry: Registry, trained: Trained
) -> None:
    publish(registry, trained, 2)
    client = make_client(access_recheck_s="0")
    assert client.post(f"/v1/models/{MODEL}:predict", data=scan()).status_code == 200
    recall = Withdrawals(registry.store)  # as the training service writes it
    recall.set(MODEL, 1, withdrawn=True, reason=REASON, actor="radiology")

    for url in (f"/v1/models/{MODEL}:predict", f"/v1/models/{MODEL}:predict?version=1"):
        refused = client.post(url, data=scan())  # production is still on version 1
        assert refused.status_code == 410, url
        assert refused.get_json()["detail"] == (
            f"model '{MODEL}' version 1 was withdrawn: {REASON}"
            " (ask for another version, or move the alias)"
        )
    for url in (f"/v2/models/{MODEL}/versions/1/infer", f"/v2/models/{MODEL}/infer"):
        refused = client.post(url, json=v2_body())
        assert refused.status_code == 410, url
        assert REASON in refused.get_json()["error"]
    for url in (f"/v2/models/{MODEL}/versions/1/ready", f"/v2/models/{MODEL}/ready"):
        assert client.get(url).status_code == 503, url  # a Triton client asks before infer
    other = client.post(f"/v1/models/{MODEL}:predict?version=2", data=scan())
    assert other.status_code == 200 and other.get_json()["model"]["version"] == 2
    described = client.get(f"/v1/models/{MODEL}")  # its card stays readable, saying why
    assert described.status_code == 200 and described.get_json()["serving"]["version"] == 1
    withdrawn = described.get_json()["serving"]["withdrawn"]
    assert (withdrawn["reason"], withdrawn["set_by"]) == (REASON, "radiology")
    assert client.get(f"/v1/models/{MODEL}?version=2").get_json()["serving"]["withdrawn"] is None
    [listed] = client.get("/v1/models").get_json()["models"]  # which, without asking each
    assert (listed["versions"], listed["withdrawn"]) == ([1, 2], [1])

    recall.set(MODEL, 1, withdrawn=False, reason="put back", actor="ops")
    assert client.post(f"/v1/models/{MODEL}:predict", data=scan()).status_code == 200
    assert client.get(f"/v1/models/{MODEL}").get_json()["serving"]["withdrawn"] is None
    assert client.get(f"/v1/models/{MODEL}").get_json()["withdrawn"] == []
    assert client.get(f"/v2/models/{MODEL}/versions/1/ready").status_code == 200


def test_a_process_keeps_its_word_until_the_recheck(
    make_client: Callable[..., Any], registry: Registry
) -> None:
    client = make_client()  # the default: re-read every 30 s
    assert client.post(f"/v1/models/{MODEL}:predict", data=scan()).status_code == 200
    Withdrawals(registry.store).set(MODEL, 1, withdrawn=True, reason=REASON, actor="ci")
    assert client.post(f"/v1/models/{MODEL}:predict", data=scan()).status_code == 200
    assert make_client().post(f"/v1/models/{MODEL}:predict", data=scan()).status_code == 410
