"""Opaque page cursors for the list endpoints: the position of a page's last item, as
URL-safe base64 of a one-key JSON object. Clients hand back `next_cursor` as it came."""

from __future__ import annotations

import base64
import binascii
import json

from service.errors import InvalidRequest

MAX_POSITION = 2**31  # the tables' sequence columns are 32-bit integers


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
