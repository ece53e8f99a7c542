"""`service.parsing`, the one request-parsing module of both services: the same mistake gets
the same status and problem shape wherever it is made."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Response, jsonify
from pydantic import BaseModel, ConfigDict, Field

from service.config import CommonSettings
from service.parsing import parse_body, parse_query
from service.web import create_base_app


class Query(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=10, ge=1)


class Body(BaseModel):
    name: str


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("SCANTUNE_AUTH_DISABLED", "true")
    app = create_base_app(__name__, CommonSettings(), service="test")

    @app.get("/things")
    def things() -> Response:
        return jsonify(limit=parse_query(Query).limit)

    @app.post("/things")
    def make() -> Response:
        return jsonify(name=parse_body(Body).name)

    return app.test_client()


@pytest.mark.parametrize(
    ("query", "loc"),
    [("limit=0", "query/limit"), ("limit=ten", "query/limit"), ("limit=1&limit=2", "query/limit"),
     ("other=1", "query/other")],
)  # fmt: skip
def test_a_bad_query_is_a_422_naming_the_parameter(client: Any, query: str, loc: str) -> None:
    answer = client.get(f"/things?{query}")
    assert answer.status_code == 422
    assert answer.mimetype == "application/problem+json"
    assert [e["loc"] for e in answer.json["errors"]] == [loc]


def test_a_good_query_and_body_parse(client: Any) -> None:
    assert client.get("/things?limit=3").json == {"limit": 3}
    assert client.post("/things", json={"name": "x"}).json == {"name": "x"}


@pytest.mark.parametrize(
    ("data", "content_type", "status"),
    [(b"{}", "text/plain", 415), (b"", "application/json", 400),
     (b"{nope", "application/json", 400), (b'{"name": 3}', "application/json", 422)],
)  # fmt: skip
def test_body_mistakes_get_their_status(
    client: Any, data: bytes, content_type: str, status: int
) -> None:
    answer = client.post("/things", data=data, content_type=content_type)
    assert answer.status_code == status
    assert answer.mimetype == "application/problem+json"
