"""When the Python client sends a request again: urllib3's `Retry` (back-off, Retry-After,
a cap on attempts) with the one rule it lacks for an API that changes things.

A request that only reads (GET, and PUT and DELETE, which set a state) is sent again after a
connection that failed, a proxy's 502 or 504, a 429 or a 503. One that may act (POST: submit
a job, report outcomes, predict) only when the service said it did not act on it: a 429 (over
the client's rate limit, refused before the view) or a 503 (the service not ready), or when
the connection was never made. A 502 or 504 from a proxy, or a connection that broke after
sending, may hide a job queued or outcomes stored, so the caller hears of it and decides (a
submit with an Idempotency-Key is safe to send again by hand).

The service's Retry-After is waited out when it is at most `longest_wait_s`; a longer one (a
client over an hourly job limit) is not slept through inside a call: the 429 goes to the
caller, whose problem says when to come back.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Self

from urllib3.exceptions import InvalidHeader, MaxRetryError
from urllib3.util.retry import Retry

if TYPE_CHECKING:
    from urllib3.connectionpool import ConnectionPool
    from urllib3.response import BaseHTTPResponse

RETRIED = frozenset({429, 502, 503, 504})
NOT_ACTED_ON = frozenset({429, 503})  # refused before anything was done: safe for any method


class ApiRetry(Retry):
    """Retry as the module says; `retry_after_max` is the longest Retry-After waited out."""

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        if self._is_method_retryable(method):
            return super().is_retry(method, status_code, has_retry_after)
        return bool(self.total) and status_code in NOT_ACTED_ON

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        """The next attempt's Retry; MaxRetryError (the answer goes back as it is) when the
        service asks to wait longer than `retry_after_max` (urllib3 would wait that long and
        ask again, too early)."""
        header = None if response is None else response.headers.get("Retry-After")
        if header is not None and self._asked_wait(header) > self.retry_after_max:
            raise MaxRetryError(_pool, url or "", None)  # type: ignore[arg-type]
        return super().increment(method, url, response, error, _pool, _stacktrace)

    def _asked_wait(self, header: str) -> float:
        try:  # parse_retry_after caps at retry_after_max; here the uncapped value is wanted
            return self.new(retry_after_max=2**31).parse_retry_after(header)
        except InvalidHeader:  # unreadable: urllib3 backs off by its own count instead
            return 0.0


def policy(retries: int, longest_wait_s: float) -> ApiRetry:
    """`retries` more attempts at most, backing off 0.5, 1, 2 s... when no Retry-After says."""
    return ApiRetry(
        total=retries,
        status_forcelist=RETRIED,
        backoff_factor=0.5,
        raise_on_status=False,  # the last answer goes to the caller, as ApiError
        retry_after_max=int(longest_wait_s),
    )
