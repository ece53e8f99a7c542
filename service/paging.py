"""Opaque page cursors for the list endpoints: the position of a page's last item, as
URL-safe base64 of a one-key JSON object. Clients hand back `next_cursor` as it came. Lists
are pages of a keyset, newest first: `newest_first` shapes the query, `split_page` cuts the
one row past the page off and names the cursor."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from service.errors import InvalidRequest

if TYPE_CHECKING:
    from sqlalchemy import Select
    from sqlalchemy.orm import Session

Row = TypeVar("Row")

MAX_POSITION = 2**31  # the tables' sequence columns are 32-bit integers
CURSOR_PATTERN = r"^[A-Za-z0-9_-]+$"  # what encode_cursor makes: base64url, unpadded


def cursor_field() -> Any:
    """A listing's `cursor` query field: a `next_cursor` as this service issued it (ASCII, so
    the longest one keeps a query string under the 4,096 bytes the services take)."""
    from pydantic import Field

    return Field(default=None, min_length=1, max_length=512, pattern=CURSOR_PATTERN)


def encode_cursor(key: str, position: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({key: position}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, key: str) -> int:
    """The position a cursor of `key` names; a 422 for anything this service did not issue."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        position = json.loads(base64.urlsafe_b64decode(padded.encode()))[key]
        if not isinstance(position, int) or isinstance(position, bool):
            raise TypeError(position)
        if not 0 <= position < MAX_POSITION:  # a database integer: a huge one is a 500 there
            raise ValueError(position)
        return position
    except (ValueError, TypeError, KeyError, binascii.Error):
        raise InvalidRequest(
            "the cursor is not one this service issued",
            errors=[{"loc": "query/cursor", "msg": "invalid cursor", "type": "value_error"}],
        ) from None


def newest_first(
    query: Select[Any], column: Any, key: str, cursor: str | None, limit: int
) -> Select[Any]:
    """`query` ordered by `column` descending, after the cursor's position, with one row more
    than `limit` (it tells whether another page follows)."""
    query = query.order_by(column.desc()).limit(limit + 1)
    if cursor is not None:
        query = query.where(column < decode_cursor(cursor, key))
    return query


def newest_page(
    session: Session, query: Select[Any], column: Any, key: str, cursor: str | None, limit: int
) -> tuple[list[Any], str | None]:
    """One page of `query`'s rows, newest first by the integer `column`, and the cursor of
    the next page (None: this is the last)."""
    rows = list(session.scalars(newest_first(query, column, key, cursor, limit)))
    return split_page(rows, limit, key, lambda row: int(getattr(row, column.key)))


def split_page(
    rows: list[Row], limit: int, key: str, position: Callable[[Row], int]
) -> tuple[list[Row], str | None]:
    """The page's rows and the cursor of the next page (None: this is the last)."""
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], encode_cursor(key, position(rows[limit - 1]))
