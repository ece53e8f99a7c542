"""`scantune keys new`: make an API key and the hashed entry settings store."""

from __future__ import annotations

import argparse
import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from service.scopes import SCOPE_NAMES

DEFAULT_EXPIRY_DAYS = 365


def register(subparsers: Any) -> None:
    keys = subparsers.add_parser("keys", help="create API keys for SCANTUNE_API_KEYS")
    sub = keys.add_subparsers(dest="keys_command", required=True)
    new = sub.add_parser("new", help="a new random key and its settings entry")
    new.add_argument("--name", required=True, help="who holds the key")
    new.add_argument("--scope", action="append", choices=SCOPE_NAMES, required=True)
    new.add_argument("--client", help="the client (team, system) the key acts for; default: --name")
    lifetime = new.add_mutually_exclusive_group()
    lifetime.add_argument(
        "--expires-days",
        type=_days,
        metavar="N",
        help=(
            f"the key works to the end of the day (UTC) N days from today; default"
            f" {DEFAULT_EXPIRY_DAYS}: credentials are rotated (docs/security.md), and one nobody"
            " rotates must not work forever. Only the printed entry carries it, so keys already"
            " in use are untouched"
        ),
    )
    lifetime.add_argument(
        "--expires",
        metavar="DATE",
        help="the key works until then: an ISO 8601 date (to its end, UTC) or a date-time"
        " with its offset (2027-03-31T18:00:00+02:00)",
    )
    lifetime.add_argument(
        "--no-expiry", action="store_true", help="a key that works until its entry is removed"
    )
    new.set_defaults(func=run_new)


def _days(text: str) -> int:
    days = int(text)
    if days < 1:
        raise argparse.ArgumentTypeError("at least 1 day")
    return days


def entry(
    name: str, key: str, scopes: list[str], client: str | None = None, expires: str | None = None
) -> dict[str, object]:
    from service.auth import hash_key

    made: dict[str, object] = {
        "name": name,
        "client": client or name,
        "sha256": hash_key(key),
        "scopes": sorted(set(scopes)),
    }
    if expires is not None:
        made["expires"] = expires
    return made


def expiry(args: argparse.Namespace, today: datetime) -> str | None:
    """The entry's `expires`: a date, or the date-time asked for; None with --no-expiry."""
    from service.config.common import expiry_instant

    if args.no_expiry:
        return None
    if args.expires is not None:
        try:
            expiry_instant(args.expires, args.name)
        except ValueError as exc:
            raise SystemExit(f"scantune keys new: --expires: {exc}") from None
        return str(args.expires).strip()
    days = args.expires_days or DEFAULT_EXPIRY_DAYS
    return (today.astimezone(UTC).date() + timedelta(days=days)).isoformat()


def run_new(args: argparse.Namespace) -> int:
    key = secrets.token_urlsafe(32)
    expires = expiry(args, datetime.now(UTC))
    print(f"key (give it to {args.name}; it is not stored anywhere): {key}")
    if expires is None:
        print("it never expires: it works until its entry is removed")
    else:
        is_date = len(expires) == len("YYYY-MM-DD")
        until = f"to the end of {expires} (UTC)" if is_date else f"until {expires}"
        print(f"it works {until}; rotate it before then (docs/security.md)")
    made = entry(args.name, key, args.scope, args.client, expires)
    print("SCANTUNE_API_KEYS entry:", json.dumps(made))
    return 0
