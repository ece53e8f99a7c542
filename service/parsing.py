"""Turning a request into validated pydantic objects, or a 4xx problem that says why: one
module for both services, so the same mistake gets the same status and problem shape.

- a query parameter that does not validate, or is given twice: 422, `errors[].loc`
  `query/<name>`;
- a JSON body: 415 for another content type, 400 when empty, not UTF-8 or not JSON, 422
  with `body/...` locations when it does not fit the model; 413 past the upload limit.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from flask import request
from pydantic import BaseModel, ValidationError

from service.encoding import parse_json
from service.errors import BadRequest, InvalidRequest, UnsupportedMediaType

M = TypeVar("M", bound=BaseModel)


def json_body() -> Any:
    """The request body decoded as JSON: 415 unless the content type is JSON, 400 if malformed."""
    mimetype = request.mimetype
    if mimetype != "application/json" and not (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    ):
        shown = mimetype or "none"
        raise UnsupportedMediaType(
            f"the request body must be JSON (Content-Type: application/json), not {shown}"
        )
    raw = request.get_data(cache=True)  # raises 413 past MAX_CONTENT_LENGTH
    if not raw.strip():
        raise BadRequest("the request body is empty; send a JSON object")
    try:
        text = raw.decode("utf-8")  # RFC 8259: JSON exchanged between systems is UTF-8
    except UnicodeDecodeError:
        raise BadRequest("the request body is not UTF-8 encoded JSON") from None
    try:
        return parse_json(text)
    except json.JSONDecodeError as exc:
        raise BadRequest(
            f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except ValueError:  # parse_json: nested past the parser
        raise BadRequest("the request body is JSON nested too deeply") from None


def parse_body(model: type[M]) -> M:
    """The JSON body validated as `model`; 422 with field locations when it does not fit."""
    data = json_body()
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest.from_pydantic(exc, location="body") from None


def parse_query(model: type[M]) -> M:
    """The query string validated as `model`; repeated parameters are refused."""
    args: dict[str, str] = {}
    for key, values in request.args.lists():
        if len(values) > 1:
            raise InvalidRequest(
                f"query parameter '{key}' is given {len(values)} times; give it once",
                errors=[{"loc": f"query/{key}", "msg": "given more than once", "type": "repeated"}],
            )
        args[key] = values[0]
    try:
        return model.model_validate(args)
    except ValidationError as exc:
        raise InvalidRequest.from_pydantic(exc, location="query") from None
