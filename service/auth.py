"""API-key authentication with scopes, shared by both services.

Keys are stored hashed (SHA-256) in settings; a client sends `Authorization: Bearer KEY` or
`X-API-Key: KEY`. Health and metrics routes stay open; everything else names the scope it
needs with `@require(scope)`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import current_app, g, request

from service.config import ApiKey
from service.errors import Forbidden, Unauthorized

F = TypeVar("F", bound=Callable[..., Any])
EXTENSION = "scantune.auth"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    """The keys a service accepts; `authenticate` returns the matching key or raises."""

    def __init__(self, keys: list[ApiKey], *, disabled: bool = False) -> None:
        self.keys = list(keys)
        self.disabled = disabled

    def authenticate(self, presented: str | None, scope: str) -> ApiKey | None:
        if self.disabled:
            return None
        if not presented:
            raise Unauthorized(
                "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key'",
                headers={"WWW-Authenticate": 'Bearer realm="scantune"'},
            )
        digest = hash_key(presented)
        match = next((k for k in self.keys if hmac.compare_digest(k.sha256, digest)), None)
        if match is None:
            raise Unauthorized(
                "the API key is not valid",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if scope not in match.scopes:
            raise Forbidden(f"the API key '{match.name}' lacks the scope '{scope}'")
        return match


def presented_key() -> str | None:
    return key_in(request.headers.get("Authorization", ""), request.headers.get("X-API-Key"))


def key_in(authorization: str, x_api_key: str | None) -> str | None:
    """The key a client presents: a bearer token, else the X-API-Key header."""
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip() or None
    return x_api_key or None


def require(scope: str) -> Callable[[F], F]:
    """Decorate a view so it runs only for a key holding `scope` (or with auth disabled)."""

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            keyring: KeyRing = current_app.extensions[EXTENSION]
            key = keyring.authenticate(presented_key(), scope)
            g.actor = key.name if key else "anonymous"
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
