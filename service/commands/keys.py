"""`scantune keys new`: make an API key and the hashed entry settings store."""

from __future__ import annotations

import argparse
import json
import secrets
from typing import Any

from service.scopes import SCOPE_NAMES


def register(subparsers: Any) -> None:
    keys = subparsers.add_parser("keys", help="create API keys for SCANTUNE_API_KEYS")
    sub = keys.add_subparsers(dest="keys_command", required=True)
    new = sub.add_parser("new", help="a new random key and its settings entry")
    new.add_argument("--name", required=True, help="who holds the key")
    new.add_argument("--scope", action="append", choices=SCOPE_NAMES, required=True)
    new.add_argument("--client", help="the client (team, system) the key acts for; default: --name")
    new.set_defaults(func=run_new)


def entry(name: str, key: str, scopes: list[str], client: str | None = None) -> dict[str, object]:
    from service.auth import hash_key

    return {
        "name": name,
        "client": client or name,
        "sha256": hash_key(key),
        "scopes": sorted(set(scopes)),
    }


def run_new(args: argparse.Namespace) -> int:
    key = secrets.token_urlsafe(32)
    print(f"key (give it to {args.name}; it is not stored anywhere): {key}")
    print("SCANTUNE_API_KEYS entry:", json.dumps(entry(args.name, key, args.scope, args.client)))
    return 0
