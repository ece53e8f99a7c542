"""Checks a submitted spec needs beyond its schema: the URIs it names must exist."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models.spec import JobSpec
from models.uri import S3Location, UriError, is_s3, local_path, s3_client
from service.config import TrainingSettings
from service.errors import Unprocessable
from service.jobs.webhook import host_allowed


def uri_exists(uri: str, settings: TrainingSettings) -> bool:
    """A local path / file:// that exists, or an s3:// object or prefix with objects under it."""
    if not is_s3(uri):
        return local_path(uri).exists()
    loc = S3Location.parse(uri)
    client: Any = s3_client(settings.s3_endpoint_url, settings.s3_region)
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        page = client.list_objects_v2(Bucket=loc.bucket, Prefix=loc.key, MaxKeys=50)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchBucket":
            return False
        raise UriError(f"cannot read {uri}: {exc.response.get('Error', {}).get('Code')}") from exc
    except BotoCoreError as exc:
        raise UriError(f"cannot read {uri}: {type(exc).__name__}") from exc
    prefix = loc.key.rstrip("/") + "/"
    return any(
        obj["Key"] == loc.key or obj["Key"].startswith(prefix) for obj in page.get("Contents", [])
    )


def allowed_locally(uri: str, roots: list[Path] | None) -> bool:
    """Whether a local URI lies under one of `roots` (None: no restriction)."""
    if roots is None:
        return True
    try:
        target = local_path(uri).resolve()
    except ValueError:  # a NUL byte: no file's name
        return False
    return any(target.is_relative_to(root.resolve()) for root in roots)


def check_uris(spec: JobSpec, settings: TrainingSettings) -> None:
    """Raise Unprocessable naming each field whose URI is not allowed or names nothing, and
    a webhook whose host is not among `webhook_allowed_hosts`.

    A local path outside `local_data_roots` is refused before anything looks at it, so the
    answer tells nothing of what exists there."""
    fields = {"dataset.uri": spec.dataset.uri}
    if spec.dataset.val_uri:
        fields["dataset.val_uri"] = spec.dataset.val_uri
    if spec.weights_uri:
        fields["weights_uri"] = spec.weights_uri
    problems: list[tuple[str, str, str]] = []  # (field, message, type)
    for field, uri in fields.items():
        if not is_s3(uri) and not allowed_locally(uri, settings.local_data_roots):
            message = (
                f"{uri} is outside the folders jobs may read (SCANTUNE_LOCAL_DATA_ROOTS);"
                " use an s3:// URI or a path under them"
            )
            problems.append((field, message, "uri_not_allowed"))
            continue
        try:
            found = uri_exists(uri, settings)
            message = f"{uri} does not exist"
        except UriError as exc:
            found, message = False, str(exc)
        if not found:
            problems.append((field, message, "uri_not_found"))
    if spec.webhook and not host_allowed(str(spec.webhook.url), settings.webhook_allowed_hosts):
        message = (
            f"{spec.webhook.url.host} is not among the hosts webhooks may call"
            " (SCANTUNE_WEBHOOK_ALLOWED_HOSTS)"
        )
        problems.append(("webhook.url", message, "webhook_host_not_allowed"))
    if problems:
        raise Unprocessable(
            "; ".join(f"{field}: {message}" for field, message, _ in problems),
            errors=[
                {"loc": "body/" + field.replace(".", "/"), "msg": message, "type": kind}
                for field, message, kind in problems
            ],
        )
