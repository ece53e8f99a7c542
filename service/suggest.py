"""'Did you mean `epochs`?' for a misspelt field, from the pydantic model that refused it.

Pydantic says only "Extra inputs are not permitted"; the API's 422 and the CLI's job-file
check both turn that into the unknown name, the closest known one, and where it was.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from service.errors import validation_errors


def field_names(model: type[BaseModel], path: list[str]) -> list[str]:
    """The field names (and aliases) of the model found by following `path` from `model`."""
    current: Any = model
    for part in path:
        holder = _model_of(current)
        field = holder.model_fields.get(part) if holder is not None else None
        if field is None:
            return []
        current = field.annotation
    found = _model_of(current)
    if found is None:
        return []
    names = set(found.model_fields)
    names |= {f.alias for f in found.model_fields.values() if f.alias}
    return sorted(names)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel inside `X`, `X | None`, `list[X]` or `dict[str, X]`, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, tuple, dict, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _model_of(arg)
            if found is not None:
                return found
    return None


def suggestion(model: type[BaseModel], loc: list[str]) -> str:
    """'; did you mean `epochs`?' (or the names allowed there) for the unknown field at loc."""
    known = field_names(model, [p for p in loc[:-1] if not p.isdigit()])
    close = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.6)
    if close:
        return f"; did you mean `{close[0]}`?"
    return f"; known fields here: {', '.join(known)}" if known else ""


def explained_errors(
    exc: ValidationError, model: type[BaseModel], *, location: str = "body"
) -> list[dict[str, Any]]:
    """`validation_errors`, with each unknown field's message naming the nearest known one."""
    errors = validation_errors(exc, location=location)
    for error in errors:
        if error["type"] != "extra_forbidden":
            continue
        loc = error["loc"].split("/")[1:]  # after the location prefix ("body/", or "/")
        name = loc[-1] if loc else "?"
        error["msg"] = (
            f"unknown field `{name}` (extra inputs are not permitted){suggestion(model, loc)}"
        )
    return errors


def summary(errors: list[dict[str, Any]]) -> str:
    """The problem's detail: how many fields, and the first few with where they are."""
    listed = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors[:5])
    return f"{len(errors)} invalid field(s): {listed}"
