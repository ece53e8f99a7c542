"""The registry endpoints in-process: models, versions, cards and aliases with who/when."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask.testing import FlaskClient

from tests.training_api.conftest import KEYS, publish_version


@pytest.fixture
def published(training_env: Path) -> str:
    publish_version(training_env / "artifacts", "chest-xray", 1, val_auc=0.91)
    publish_version(training_env / "artifacts", "chest-xray", 2, val_auc=0.95)
    publish_version(training_env / "artifacts", "knee", 1)
    return "chest-xray"


def test_list_models_with_versions_and_aliases(published: str, client: FlaskClient) -> None:
    client.put(f"/v1/models/{published}/aliases/production", json={"version": 1})

    items = client.get("/v1/models").get_json()["items"]

    assert items == [
        {
            "name": "chest-xray",
            "versions": [1, 2],
            "latest_version": 2,
            "aliases": {"production": 1},
        },
        {"name": "knee", "versions": [1], "latest_version": 1, "aliases": {}},
    ]


def test_versions_carry_headline_metrics(published: str, client: FlaskClient) -> None:
    body = client.get(f"/v1/models/{published}/versions").get_json()

    assert [v["version"] for v in body["items"]] == [1, 2]
    assert body["items"][1]["metrics"] == {"val_auc": 0.95}
    assert body["unreadable"] == []


def test_version_detail_has_card_metrics_and_artifact_uris(
    published: str, client: FlaskClient, training_env: Path
) -> None:
    body = client.get(f"/v1/models/{published}/versions/2").get_json()

    assert body["card"]["version"] == 2
    assert body["metrics"]["per_class"] == {"normal": {"f1": 0.9}}
    root = (training_env / "artifacts").as_uri()
    assert body["artifacts"]["model.onnx"] == f"{root}/models/chest-xray/versions/2/model.onnx"
    assert body["artifacts"]["plots/roc.png"].endswith("/versions/2/plots/roc.png")


def test_put_alias_records_who_and_when_and_keeps_history(
    published: str, client: FlaskClient
) -> None:
    first = client.put(f"/v1/models/{published}/aliases/production", json={"version": 1})
    second = client.put(f"/v1/models/{published}/aliases/production", json={"version": 2})

    assert first.status_code == second.status_code == 200
    record = second.get_json()
    assert record["version"] == 2
    assert record["set_by"] == "team"  # the client the admin key acts for
    assert [h["version"] for h in record["history"]] == [1]
    assert client.get(f"/v1/models/{published}/aliases/production").get_json() == record
    listed = client.get(f"/v1/models/{published}/aliases").get_json()["items"]
    assert listed == [record]
    detail = client.get(f"/v1/models/{published}/versions/2").get_json()
    assert detail["aliases"] == ["production"]


@pytest.mark.parametrize(
    ("path", "body", "status", "loc"),
    [
        ("/v1/models/chest-xray/aliases/production", {"version": 9}, 422, "body/version"),
        ("/v1/models/chest-xray/aliases/production", {"version": "2"}, 422, "body/version"),
        ("/v1/models/chest-xray/aliases/production", {"version": 0}, 422, "body/version"),
        ("/v1/models/chest-xray/aliases/production", {}, 422, "body/version"),
        ("/v1/models/chest-xray/aliases/production", {"version": 1, "x": 1}, 422, "body/x"),
        ("/v1/models/chest-xray/aliases/Prod_1", {"version": 1}, 422, "path/alias"),
        ("/v1/models/unknown/aliases/production", {"version": 1}, 404, None),
    ],
)
def test_bad_alias_updates(
    published: str, client: FlaskClient, path: str, body: object, status: int, loc: str | None
) -> None:
    response = client.put(path, json=body)

    problem = response.get_json()
    assert response.status_code == status, problem
    if loc:
        assert loc in [e["loc"] for e in problem["errors"]]


def test_missing_version_and_alias_are_404(published: str, client: FlaskClient) -> None:
    assert client.get(f"/v1/models/{published}/versions/7").status_code == 404
    response = client.get(f"/v1/models/{published}/aliases/staging")
    assert response.status_code == 404
    assert "no alias 'staging'" in response.get_json()["detail"]


def test_alias_put_needs_models_write(published: str, anonymous: FlaskClient) -> None:
    response = anonymous.put(
        f"/v1/models/{published}/aliases/production",
        json={"version": 1},
        headers=KEYS["ci"].headers,
    )
    assert response.status_code == 403


def test_a_card_that_does_not_parse_is_a_503_naming_the_version_not_a_422(
    client: FlaskClient, training_env: Path
) -> None:
    """A broken card.json answered 422 'body/name: Field required' to a GET with no body."""
    publish_version(training_env / "artifacts", "chest-xray", 1)
    publish_version(training_env / "artifacts", "chest-xray", 2)
    card = training_env / "artifacts" / "models" / "chest-xray" / "versions" / "2" / "card.json"
    card.write_text("not json at all")
    for method, url, body in [
        ("GET", "/v1/models/chest-xray/versions/2", None),
        ("PUT", "/v1/models/chest-xray/aliases/staging", {"version": 2}),
    ]:
        response = client.open(url, method=method, json=body)
        problem = response.get_json()
        assert response.status_code == 503, (url, problem)
        assert problem["title"] == "Model artifact corrupt"
        assert "version 2: its card.json is not a valid model card" in problem["detail"]
    assert client.get("/v1/models/chest-xray/versions/1").status_code == 200


def test_a_version_whose_card_does_not_parse_is_listed_as_unreadable_beside_the_rest(
    client: FlaskClient, training_env: Path
) -> None:
    """The listing used to answer 503 for the whole model, so one edited card hid every
    version from a pipeline choosing what to promote."""
    for version in (1, 2, 3):
        publish_version(training_env / "artifacts", "chest-xray", version)
    staging = client.put("/v1/models/chest-xray/aliases/staging", json={"version": 2})
    assert staging.status_code == 200
    card = training_env / "artifacts" / "models" / "chest-xray" / "versions" / "2" / "card.json"
    card.write_text('{"name": "chest-xray"')
    response = client.get("/v1/models/chest-xray/versions")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert [v["version"] for v in body["items"]] == [1, 3]
    assert [(v["version"], v["aliases"]) for v in body["unreadable"]] == [(2, ["staging"])]
    assert "its card.json is not a valid model card" in body["unreadable"][0]["detail"]
    card.write_text(card.read_text() + "}")  # still missing fields: still unreadable
    assert [
        v["version"] for v in client.get("/v1/models/chest-xray/versions").get_json()["unreadable"]
    ] == [2]


def test_an_unreadable_alias_record_is_a_503_and_a_put_repairs_it(
    client: FlaskClient, training_env: Path
) -> None:
    publish_version(training_env / "artifacts", "chest-xray", 1)
    staging = "/v1/models/chest-xray/aliases/staging"
    assert client.put(staging, json={"version": 1}).status_code == 200
    record = training_env / "artifacts" / "models" / "chest-xray" / "aliases" / "staging.json"
    record.write_text('{"version": ')
    broken = client.get(staging)
    assert broken.status_code == 503 and broken.get_json()["title"] == "Model artifact corrupt"
    assert client.get("/v1/models/chest-xray/aliases").status_code == 200
    assert client.get("/v1/models").status_code == 200
    repaired = client.put(staging, json={"version": 1})
    assert repaired.status_code == 200 and repaired.get_json()["history"] == []
    assert client.get(staging).status_code == 200


def _pages(client: FlaskClient, query: str) -> list[list[int]]:
    """Every page of the versions listing for `query`, following `next_cursor`."""
    pages, cursor = [], None
    while True:
        url = f"/v1/models/chest-xray/versions?{query}" + (f"&cursor={cursor}" if cursor else "")
        body = client.get(url).get_json()
        pages.append([v["version"] for v in body["items"] + body["unreadable"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


def test_versions_are_listed_in_pages_oldest_or_newest_first(
    client: FlaskClient, training_env: Path
) -> None:
    for version in range(1, 6):
        publish_version(training_env / "artifacts", "chest-xray", version)
    assert _pages(client, "limit=2") == [[1, 2], [3, 4], [5]]
    assert _pages(client, "limit=2&order=newest") == [[5, 4], [3, 2], [1]]
    assert _pages(client, "order=newest&limit=1")[0] == [5]  # what a promotion gate asks
    assert _pages(client, "limit=5") == [[1, 2, 3, 4, 5]]  # no empty page after a full one
    default = client.get("/v1/models/chest-xray/versions").get_json()
    assert [v["version"] for v in default["items"]] == [1, 2, 3, 4, 5]
    assert default["next_cursor"] is None


def test_a_page_reads_only_its_own_cards(client: FlaskClient, training_env: Path) -> None:
    """A broken card outside the page is not read, so it cannot show up in it."""
    for version in range(1, 5):
        publish_version(training_env / "artifacts", "chest-xray", version)
    card = training_env / "artifacts" / "models" / "chest-xray" / "versions" / "4" / "card.json"
    card.write_text("{")
    oldest = client.get("/v1/models/chest-xray/versions?limit=2").get_json()
    assert ([v["version"] for v in oldest["items"]], oldest["unreadable"]) == ([1, 2], [])
    newest = client.get("/v1/models/chest-xray/versions?limit=2&order=newest").get_json()
    assert [v["version"] for v in newest["items"]] == [3]
    assert [v["version"] for v in newest["unreadable"]] == [4]


@pytest.mark.parametrize(
    ("query", "loc"),
    [
        ("limit=0", "query/limit"),
        ("limit=1001", "query/limit"),
        ("order=sideways", "query/order"),
        ("cursor=not-a-cursor", "query/cursor"),
        ("cursor=eyJzZXEiOiAzfQ", "query/cursor"),  # a job listing's cursor
        ("page=2", "query/page"),
        ("limit=1&limit=2", "query/limit"),
    ],
)
def test_bad_paging_parameters_are_422_naming_the_parameter(
    published: str, client: FlaskClient, query: str, loc: str
) -> None:
    response = client.get(f"/v1/models/{published}/versions?{query}")
    assert response.status_code == 422, response.get_json()
    assert [e["loc"] for e in response.get_json()["errors"]] == [loc]
