"""Query parsing for both API versions' views."""

from __future__ import annotations

from typing import TypeVar

from flask import request
from pydantic import BaseModel, ValidationError

from service.errors import BadRequest, validation_errors

M = TypeVar("M", bound=BaseModel)


def parse_query(model: type[M]) -> M:
    """The query string as `model`, or a 400 naming the bad parameters."""
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as exc:
        errors = validation_errors(exc, location="query")
        summary = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors[:5])
        raise BadRequest(f"invalid query: {summary}", errors=errors) from None
