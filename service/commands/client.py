"""A small HTTP client for the training API, shared by `scantune jobs` and `scantune models`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from service.client import ApiError, Client, describe_problem

DEFAULT_URL = "http://127.0.0.1:8000"


HTTP_ERROR = 5
"""Exit code of every command whose request the API refused or could not be reached."""


def guarded(
    func: Callable[[argparse.Namespace, ApiClient], int],
) -> Callable[[argparse.Namespace], int]:
    """Run `func` with a client from the arguments; API errors print and exit HTTP_ERROR."""

    def run(args: argparse.Namespace) -> int:
        try:
            return int(func(args, ApiClient.from_args(args)))
        except ApiError as exc:
            print(f"error: {exc}{hint(exc, args)}", file=sys.stderr)
            return HTTP_ERROR

    return run


def add_connection_args(
    parser: argparse.ArgumentParser,
    *,
    service: str = "training",
    url_env: str = "SCANTUNE_URL",
    default_url: str = DEFAULT_URL,
    timeout: float = 30.0,
) -> None:
    """--url, --api-key and --http-timeout, with defaults from the environment."""
    parser.set_defaults(service=service)
    parser.add_argument(
        "--url",
        default=os.environ.get(url_env, default_url),
        help=f"{service} API base URL (env {url_env}; default {default_url})",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("SCANTUNE_API_KEY"),
        help="API key (env SCANTUNE_API_KEY); sent as 'Authorization: Bearer <key>'",
    )
    parser.add_argument(
        "--http-timeout",
        type=float,
        default=timeout,
        help=f"seconds per HTTP request (default {timeout:g})",
    )


class ApiClient(Client):
    """The service's client as the commands build it from their arguments."""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ApiClient:
        return cls(args.url, args.api_key, timeout=args.http_timeout, service=args.service)


def hint(exc: ApiError, args: argparse.Namespace) -> str:
    """What to do about a refusal the user can fix from the shell."""
    if exc.status == 401:
        if " expired at " in str(exc.problem.get("detail", "")):  # the detail says which, when
            return "\n  (ask for a new key: docs/security.md, Key expiry and rotation)"
        given = "the API key was refused" if getattr(args, "api_key", None) else "no API key given"
        return (
            f"\n  ({given}; set SCANTUNE_API_KEY or pass --api-key with a key the service at"
            f" {args.url} accepts)"
        )
    if exc.status == 403:
        return "\n  (the key lacks that scope; ask for a key that has it)"
    return ""


__all__ = [
    "HTTP_ERROR",
    "ApiClient",
    "ApiError",
    "add_connection_args",
    "describe_problem",
    "guarded",
]


def printed_raw(body: Any, raw: bool) -> bool:
    """With --json, print the API's answer as it came; whether it was."""
    if raw:
        print(json.dumps(body, indent=2))
    return raw
