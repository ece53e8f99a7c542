"""One error type for the services, and one JSON problem shape (RFC 9457) for every failure.

Service objects raise `ServiceError` subclasses; `register_error_handlers` turns those,
pydantic validation errors and Werkzeug's HTTP errors into `application/problem+json`.
No stack trace ever reaches a client: unexpected exceptions become a bare 500 problem and
are logged with the request id.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

if TYPE_CHECKING:  # Flask is imported where responses are made: the error types stay
    # importable without it (the inference worker loads models while Flask is still importing)
    from flask import Flask, Response

log = logging.getLogger(__name__)

PROBLEM_TYPE = "https://scantune.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"


class ServiceError(Exception):
    """Base of every error a client may see; subclasses set `status` and a title."""

    status = 500
    title = "Internal server error"

    def __init__(
        self,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}

    @property
    def slug(self) -> str:
        return self.title.lower().replace(" ", "-")


class BadRequest(ServiceError):
    status, title = 400, "Bad request"


class Unauthorized(ServiceError):
    status, title = 401, "Unauthorized"


class Forbidden(ServiceError):
    status, title = 403, "Forbidden"


class NotFound(ServiceError):
    status, title = 404, "Not found"


class NotAcceptable(ServiceError):
    status, title = 406, "Not acceptable"


class Conflict(ServiceError):
    status, title = 409, "Conflict"


class PayloadTooLarge(ServiceError):
    status, title = 413, "Payload too large"


class UriTooLong(ServiceError):
    status, title = 414, "URI too long"


class UnsupportedMediaType(ServiceError):
    status, title = 415, "Unsupported media type"


class Unprocessable(ServiceError):
    status, title = 422, "Unprocessable content"


class TooManyRequests(ServiceError):
    status, title = 429, "Too many requests"


class ServiceUnavailable(ServiceError):
    status, title = 503, "Service unavailable"


class BadGateway(ServiceError):
    """A server this service relies on (a PACS) failed or refused."""

    status, title = 502, "Bad gateway"


class GatewayTimeout(ServiceError):
    status, title = 504, "Gateway timeout"


def validation_errors(exc: ValidationError, *, location: str = "body") -> list[dict[str, Any]]:
    """Pydantic errors as `{loc, msg, type}` with a JSON-pointer-like location."""
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = "/".join(str(part) for part in err["loc"])
        out.append(
            {
                "loc": f"{location}/{loc}" if loc else location,
                "msg": err["msg"],
                "type": err["type"],
            }
        )
    return out


class InvalidRequest(Unprocessable):
    """A well-formed request whose fields do not validate."""

    title = "Validation failed"

    @classmethod
    def from_pydantic(cls, exc: ValidationError, *, location: str = "body") -> InvalidRequest:
        errors = validation_errors(exc, location=location)
        summary = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors[:5])
        return cls(f"{len(errors)} invalid field(s): {summary}", errors=errors)


def problem_body(
    status: int,
    title: str,
    detail: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """The problem document itself: what `problem` sends, and gunicorn's hook too."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE + title.lower().replace(" ", "-"),
        "title": title,
        "status": status,
        "detail": detail,
    }
    if request_id:
        body["request_id"] = request_id
    if errors:
        body["errors"] = errors
    return body


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """A problem+json response."""
    from flask import Response, g, json

    request_id = g.get("request_id") if g else None
    body = problem_body(status, title, detail, errors=errors, request_id=request_id)
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM_MEDIA_TYPE)
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def register_error_handlers(app: Flask) -> None:
    """Every error leaves as one problem shape."""
    from flask import g
    from werkzeug.exceptions import HTTPException

    @app.errorhandler(ServiceError)
    def _service_error(exc: ServiceError) -> Response:
        return problem(exc.status, exc.title, exc.detail, errors=exc.errors, headers=exc.headers)

    @app.errorhandler(ValidationError)
    def _validation_error(exc: ValidationError) -> Response:
        err = InvalidRequest.from_pydantic(exc)
        return problem(err.status, err.title, err.detail, errors=err.errors)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        detail = exc.description or exc.name
        if status == 413:
            detail = "request body is larger than this service accepts"
        headers = (
            {"Allow": exc.response.headers["Allow"]}
            if exc.response is not None and "Allow" in exc.response.headers
            else None
        )
        if (
            status == 405
            and headers is None
            and hasattr(exc, "valid_methods")
            and exc.valid_methods
        ):
            headers = {"Allow": ", ".join(exc.valid_methods)}
        return problem(status, exc.name, detail, headers=headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error (request %s)", g.get("request_id"))
        return problem(
            500, "Internal server error", "an unexpected error occurred; see the service log"
        )
