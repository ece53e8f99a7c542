"""API-key authentication with scopes, shared by both services.

Keys are stored hashed (SHA-256) in settings; a client sends `Authorization: Bearer KEY` or
`X-API-Key: KEY`. Health and metrics routes stay open; everything else names the scope it
needs with `@require(scope)`. A key past its `expires` is refused, by the clock of the request.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import wraps
from typing import Any, TypeVar

from flask import current_app, g, request

from service.config import SCOPES, ApiKey
from service.errors import Forbidden, Unauthorized

F = TypeVar("F", bound=Callable[..., Any])
EXTENSION = "scantune.auth"
Clock = Callable[[], datetime]


@dataclass(frozen=True)
class Principal:
    """Who is asking: the key's holder, the client it acts for, and what it may do."""

    name: str
    client: str
    scopes: frozenset[str]

    @property
    def admin(self) -> bool:
        """Sees and acts on every client's jobs (and reads the audit trail)."""
        return "admin" in self.scopes

    def may(self, scope: str) -> bool:
        return scope in self.scopes

    @classmethod
    def of(cls, key: ApiKey | None) -> Principal:
        if key is None:  # auth disabled: local use, one user who may do everything
            return cls("anonymous", "anonymous", frozenset(SCOPES))
        return cls(key.name, key.owner, frozenset(key.scopes))


def current_principal() -> Principal:
    """The principal of the request being served (set by `require`)."""
    found: Principal = g.principal
    return found


def visible_client() -> str | None:
    """The client whose jobs this request may see and touch; None (every client's) for an
    admin key."""
    who = current_principal()
    return None if who.admin else who.client


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def utc_now() -> datetime:
    return datetime.now(UTC)


class KeyRing:
    """The keys a service accepts; `authenticate` returns the matching key or raises.
    `clock` is asked at each check, so a server that runs for months starts refusing a key
    the moment it expires (tests give it a clock of their own)."""

    def __init__(
        self, keys: list[ApiKey], *, disabled: bool = False, clock: Clock = utc_now
    ) -> None:
        self.keys = list(keys)
        self.disabled = disabled
        self.clock = clock

    def authenticate(self, presented: str | None, scope: str | None) -> ApiKey | None:
        """The key presented, checked to hold `scope` (None: any valid key will do)."""
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
            audit_refused("key_refused", "the API key is not valid")
            raise Unauthorized(
                "the API key is not valid",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if match.expired(self.clock()):  # before its scopes: an expired key may do nothing
            raise key_expired(match)
        if scope is not None and scope not in match.scopes:
            audit_refused("access_denied", f"lacks scope {scope}", match)
            raise Forbidden(f"the API key '{match.name}' lacks the scope '{scope}'")
        return match


def key_expired(key: ApiKey) -> Unauthorized:
    """The refusal of a key past its `expires`, audited: its name and when, never the key."""
    when = key.expires_text
    audit_refused("key_expired", f"the API key '{key.name}' expired at {when}", key)
    return Unauthorized(
        f"the API key '{key.name}' expired at {when}: its holder needs a new one",
        headers={
            "WWW-Authenticate": (
                f'Bearer error="invalid_token", error_description="the API key expired at {when}"'
            )
        },
    )


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
            g.principal = Principal.of(key)
            g.actor = g.principal.name
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def audit_refused(action: str, why: str, key: ApiKey | None = None) -> None:
    """Record a refused key or a denied scope (never the key itself). Outside an HTTP request
    (a DICOM association checked against the same keys) the target is unknown."""
    from flask import has_request_context

    from service.audit import record

    client = key.owner if key else "unknown"
    target = "-"
    if has_request_context():
        target = f"{request.method} {request.url_rule.rule if request.url_rule else '?'}"
    record(action, client=client, target=target, outcome="refused", detail=why)
