"""What every process's settings share: the artifact store, S3, API keys, limits, logs;
and turning a bad environment variable into one line and exit status 2."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from service.errors import validation_errors

DEFAULT_VAR = Path("var")


LIMITED_ACTIONS = ("predict", "jobs", "job_checks", "retrievals", "outcomes")
"""What `rate_limits` may limit: predictions, job submissions, their dry runs (`job_checks`:
under the `jobs` limit unless set apart, so a pipeline's checks need not spend its submits),
the DICOM node's retrievals, reports of outcomes (each up to 1,000 rows in the job store)."""

Scope = Literal[
    "read", "jobs:write", "models:write", "predict", "series:read", "series:retrieve", "admin"
]
"""What an API key may do (docs/security.md): `read` is a client's own jobs and the registry;
`series:read` the DICOM node's series, which no client owns, so no `read` key sees them;
`series:retrieve` has the node fetch a study from a PACS."""
SCOPES: tuple[Scope, ...] = get_args(Scope)


class ApiKey(BaseModel):
    """One API key as stored in settings: never the key itself, only its SHA-256."""

    name: str = Field(description="Who holds the key; recorded as the actor of changes.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Hex SHA-256 of the key.")
    scopes: list[Scope]
    # Clients and ownership (issue 24)
    client: str = Field(
        default="",
        max_length=255,
        description=(
            "The client (team, system) the key belongs to: it sees and cancels only its own"
            " jobs unless the key has the admin scope. Empty: the key's name."
        ),
    )
    # Keys that expire, so credentials get rotated
    expires: datetime | None = Field(
        default=None,
        description=(
            "When the key stops working: an ISO 8601 date (it works to the end of that day,"
            " UTC) or a date-time with its offset (Z, +01:00). None: never."
        ),
    )

    @field_validator("expires", mode="before")
    @classmethod
    def _an_instant(cls, value: object, info: ValidationInfo) -> datetime | None:
        return expiry_instant(value, str(info.data.get("name", "?")))

    @property
    def owner(self) -> str:
        """The client this key acts for."""
        return self.client or self.name

    def expired(self, now: datetime) -> bool:
        return self.expires is not None and now >= self.expires

    @property
    def expires_text(self) -> str:
        """The moment it stops working, in UTC (`2027-01-16T00:00:00Z`); "never" if none."""
        if self.expires is None:
            return "never"
        return self.expires.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def expiry_instant(value: object, key: str) -> datetime | None:
    """An API key's `expires` as the moment it stops working. A date is the end of that day,
    UTC (the next day's midnight); a date-time without an offset is refused: read in the
    server's zone or in UTC, it would end the key hours apart."""
    if isinstance(value, str):
        value = _iso(value.strip(), key)
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise ValueError(
                f"key {key!r}: expires has a time but no UTC offset, which is ambiguous: add Z"
                " or +HH:MM, or give a date (the key then works to the end of that day, UTC)"
            )
        return value
    if isinstance(value, date):
        return datetime.combine(value + timedelta(days=1), time(), UTC)
    raise ValueError(f"key {key!r}: expires is not an ISO 8601 date or date-time")


def _iso(text: str, key: str) -> date | datetime:
    try:
        return date.fromisoformat(text) if _DATE.fullmatch(text) else datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"key {key!r}: expires is not an ISO 8601 date or date-time") from None


class CommonSettings(BaseSettings):
    """Settings both services share: artifact store, S3, auth, limits."""

    model_config = SettingsConfigDict(env_prefix="SCANTUNE_", extra="ignore")

    artifact_uri: str = Field(
        default=f"file://{(DEFAULT_VAR / 'artifacts').resolve()}",
        description="Where published models live: file:///path or s3://bucket/prefix.",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint (MinIO, moto...); None means AWS."
    )
    s3_region: str | None = Field(default=None, description="S3 region; default from AWS config.")
    api_keys: list[ApiKey] = Field(
        default_factory=list,
        description=(
            'JSON list of {"name", "client", "sha256", "scopes", "expires"};'
            " `scantune keys new` makes one."
        ),
    )
    auth_disabled: bool = Field(
        default=False,
        description="Serve without API keys. Only for local use; never in production.",
    )
    max_upload_mb: float = Field(default=32.0, gt=0, description="Largest request body accepted.")
    access_recheck_s: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description=(
            "How stale a process's word on who may use a model version may be: sharing or"
            " revoking a published version reaches every process within this many seconds."
        ),
    )
    log_level: str = Field(default="INFO", description="Python logging level name.")
    # Security: rate limits, structured logs, audit (issue 24)
    rate_limits: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "JSON object: per-client limits by action (predict, jobs, retrievals), e.g."
            ' {"predict": "50/second", "jobs": "20/hour"} (the `limits` notation); an action'
            " not named is not limited."
        ),
    )
    redis_url: str | None = Field(
        default=None,
        description="redis://host:port/db shared by workers and replicas for the rate limits.",
    )
    rate_limit_prefix: str = Field(
        default="scantune", description="Key prefix of the rate limits' counters in Redis."
    )
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto",
        description=(
            "json: one JSON object a line (timestamp, level, logger, request_id, message);"
            " text: for a person; auto: text at a terminal, else json."
        ),
    )

    @field_validator("rate_limits")
    @classmethod
    def _known_limits(cls, value: dict[str, str]) -> dict[str, str]:
        from limits import parse

        for action, text in value.items():
            if action not in LIMITED_ACTIONS:
                raise ValueError(
                    f"unknown action {action!r}: use one of {', '.join(LIMITED_ACTIONS)}"
                )
            parse(text)  # ValueError names what is wrong with the notation
        return value

    audit_salt: str = Field(
        default="",
        description="Salt of the hashes that stand for study UIDs in audit records.",
    )
    audit_salt_previous: str | None = Field(
        default=None,
        description="The salt before the current one (empty: none was set), while rotating: an"
        " outcome reported under it is found again when the scan is reported or retracted"
        " after, and re-keyed, so a correction still replaces it instead of counting twice.",
    )
    prediction_signing_key: SecretStr | None = Field(
        default=None,
        description="HMAC key the inference service signs each prediction's probabilities with"
        " and the training service checks reported outcomes against (the same in both); none:"
        " predictions are unsigned and outcomes taken on trust.",
    )
    prediction_signing_key_previous: SecretStr | None = Field(
        default=None,
        description="The key before the current one: the training service still takes outcomes"
        " signed with it, so a key can be rotated (training first, then inference) while"
        " clients hold answers signed with the old one.",
    )


def describe_settings_error(exc: ValidationError | SettingsError) -> str:
    """One line naming each bad environment variable and what is wrong with it; never the
    value, which may be a secret (a database URL with its password)."""
    prefix = CommonSettings.model_config.get("env_prefix", "")
    if isinstance(exc, SettingsError):  # a value that is not even JSON, for a list or a dict
        match = re.search(r'field "(\w+)"', str(exc))
        field = match.group(1).upper() if match else "?"
        return f"{prefix}{field}: {exc.__cause__ or exc}"
    parts = []
    for error in validation_errors(exc, location="")[:5]:  # "/field/inside/..."
        field, *inside = error["loc"].removeprefix("/").split("/")
        where = f" (at {'.'.join(inside)})" if inside else ""
        parts.append(f"{prefix}{(field or '?').upper()}{where}: {error['msg']}")
    return "; ".join(parts)


S = TypeVar("S", bound=CommonSettings)


def settings_or_exit(settings_class: type[S], log: Any, service: str) -> S:
    """The settings from the environment; on a bad value, one error line naming the variable
    (not a traceback) and exit 2. gunicorn's master calls it before it forks, so a bad value
    does not make every worker fail to boot with its own traceback."""
    try:
        return settings_class()
    except (ValidationError, SettingsError) as exc:
        log.error("scantune %s: invalid settings: %s", service, describe_settings_error(exc))
        raise SystemExit(2) from None
