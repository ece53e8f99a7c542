"""Per-client rate limits (`SCANTUNE_RATE_LIMITS`), counted by the `limits` library.

Counters live in Redis when `SCANTUNE_REDIS_URL` is set, so every gunicorn worker and every
replica shares them; otherwise in this process (a per-worker limit). A request past its
limit is a 429 with Retry-After and an audit record.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import current_app

from service.config import CommonSettings
from service.config.common import LIMITED_ACTIONS
from service.errors import TooManyRequests

F = TypeVar("F", bound=Callable[..., Any])
EXTENSION = "scantune.ratelimit"
FALLS_UNDER = {"job_checks": "jobs"}  # a dry run is limited as a submit unless set apart


class RateLimits:
    def __init__(self, settings: CommonSettings) -> None:
        from limits import parse
        from limits.storage import storage_from_string
        from limits.strategies import MovingWindowRateLimiter

        self.rules = {action: parse(text) for action, text in settings.rate_limits.items()}
        self.limiter: Any = None
        if self.rules:
            options: dict[str, Any] = {}
            uri = settings.redis_url or "memory://"
            if settings.redis_url:
                options["key_prefix"] = settings.rate_limit_prefix
            self.limiter = MovingWindowRateLimiter(storage_from_string(uri, **options))

    def hit(self, action: str, client: str) -> None:
        """Count one `action` of `client`; TooManyRequests past its limit. An action with no
        limit of its own counts under the one it is a kind of, where set (`FALLS_UNDER`)."""
        action = action if action in self.rules else FALLS_UNDER.get(action, action)
        rule = self.rules.get(action)
        if rule is None or self.limiter is None:
            return
        if self.limiter.hit(rule, action, client):
            return
        stats = self.limiter.get_window_stats(rule, action, client)
        retry = max(1, math.ceil(stats.reset_time - time.time()))
        raise TooManyRequests(
            f"client '{client}' is over its limit of {rule} for {action}; retry in {retry} s",
            headers={"Retry-After": str(retry)},
        )


def count_against_limit(action: str) -> None:
    """Count one `action` of the request's client (after `require`): a 429, audited, past
    its limit. For a view whose action depends on the request; else `limited`."""
    from service.audit import record
    from service.auth import current_principal

    client = current_principal().client
    try:
        current_app.extensions[EXTENSION].hit(action, client)
    except TooManyRequests:
        record("rate_limited", client=client, target=action, outcome="refused")
        raise


def limited(action: str) -> Callable[[F], F]:
    """Decorate a view (inside `require`) so each call counts against the client's limit."""
    if action not in LIMITED_ACTIONS:  # a limit the settings could never set
        raise ValueError(f"{action!r} is not one of {LIMITED_ACTIONS}")

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            count_against_limit(action)
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
