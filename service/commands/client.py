"""A small HTTP client for the training API, shared by `scantune jobs` and `scantune models`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: `scantune serve` must start without it
    import requests

DEFAULT_URL = "http://127.0.0.1:8000"


class ApiError(Exception):
    """The API refused a request (status set) or could not be reached (status None)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


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
            print(f"error: {exc}", file=sys.stderr)
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


class ApiClient:
    def __init__(
        self, url: str, api_key: str | None, *, timeout: float = 30.0, service: str = "training"
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.service = service
        import requests

        self.session = requests.Session()
        self.session.headers["Accept"] = "application/json"
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ApiClient:
        return cls(args.url, args.api_key, timeout=args.http_timeout, service=args.service)

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send one request; ApiError for a problem response or an unreachable service."""
        import requests

        try:
            response = self.session.request(
                method, f"{self.url}{path}", timeout=self.timeout, **kwargs
            )
        except requests.RequestException as exc:
            raise ApiError(f"cannot reach the {self.service} API at {self.url}: {exc}") from None
        if response.status_code >= 400:
            raise ApiError(describe_problem(response), response.status_code)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()


def describe_problem(response: requests.Response) -> str:
    """'422 Validation failed: ...' plus one line per field error, from a problem body."""
    try:
        problem = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:500]}"
    lines = [f"HTTP {response.status_code} {problem.get('title', '')}: {problem.get('detail', '')}"]
    lines += [f"  {e.get('loc')}: {e.get('msg')}" for e in problem.get("errors") or []]
    return "\n".join(lines)
