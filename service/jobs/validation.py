"""Checks a submitted spec needs beyond its schema: what it may read and call, and that the
data it names exists.

The API runs `check_uris` at submit; the job runner runs `check_access` again, with the same
settings (the Kubernetes launcher passes them to the pod), before it reads anything.
Secure by default: with no `local_data_roots` and no `s3_data_prefixes`, no data URI is
allowed; a webhook may not call an internal address unless its host is allow-listed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from models.spec import JobSpec
from models.uri import S3Location, UriError, is_s3, local_path, s3_client
from service.config import TrainingSettings
from service.errors import Unprocessable
from service.jobs.egress import TargetRefused, check_target

Problem = tuple[str, str, str]  # (field, message, type)
MAX_LINKS_CHECKED = 100_000


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


def allowed_locally(uri: str, roots: list[Path]) -> bool:
    """Whether a local URI lies under one of `roots` once symlinks are resolved, and, for a
    folder, no symlink inside it leads out of them."""
    try:
        target = local_path(uri).resolve()
    except (ValueError, OSError, RuntimeError):  # UriError, a NUL byte, a link loop
        return False
    resolved = [root.resolve() for root in roots]
    if not _under(target, resolved):
        return False
    return not target.is_dir() or _links_stay_inside(target, resolved)


def _under(path: Path, roots: list[Path]) -> bool:
    return any(path.is_relative_to(root) for root in roots)


def _links_stay_inside(folder: Path, roots: list[Path]) -> bool:
    seen = 0
    for dirpath, dirnames, filenames in os.walk(folder):  # does not descend into linked dirs
        for name in [*dirnames, *filenames]:
            path = Path(dirpath, name)
            seen += 1
            if seen > MAX_LINKS_CHECKED:
                return False
            if path.is_symlink() and not _under(path.resolve(), roots):
                return False
    return True


def allowed_in_s3(uri: str, prefixes: list[str]) -> bool:
    """Whether an s3:// URI lies under one of `prefixes` (whole path segments only)."""
    if "/../" in f"{uri}/" or "/./" in f"{uri}/":
        return False
    for prefix in prefixes:
        base = prefix.rstrip("/")
        if uri == base or uri.startswith(base + "/"):
            return True
    return False


def _data_fields(spec: JobSpec) -> dict[str, str]:
    fields = {"dataset.uri": spec.dataset.uri}
    if spec.dataset.val_uri:
        fields["dataset.val_uri"] = spec.dataset.val_uri
    if spec.weights_uri:
        fields["weights_uri"] = spec.weights_uri
    return fields


def access_problems(spec: JobSpec, settings: TrainingSettings, *, resolve: bool) -> list[Problem]:
    """Data URIs outside what settings allow, a GPU count over the cap, and a webhook that
    would call an internal address. Nothing is read, so the answer tells nothing of what
    exists outside the allowed places."""
    problems: list[Problem] = []
    for field, uri in _data_fields(spec).items():
        if is_s3(uri) and not allowed_in_s3(uri, settings.s3_data_prefixes):
            message = (
                f"{uri} is outside the s3:// prefixes jobs may read (SCANTUNE_S3_DATA_PREFIXES)"
            )
            problems.append((field, message, "uri_not_allowed"))
        elif not is_s3(uri) and not allowed_locally(uri, settings.local_data_roots):
            message = (
                f"{uri} is outside the folders jobs may read (SCANTUNE_LOCAL_DATA_ROOTS),"
                " or a link in it leads outside them"
            )
            problems.append((field, message, "uri_not_allowed"))
    if spec.resources.gpus > settings.max_gpus_per_job:
        message = f"at most {settings.max_gpus_per_job} GPUs per job (SCANTUNE_MAX_GPUS_PER_JOB)"
        problems.append(("resources.gpus", message, "limit_exceeded"))
    if spec.webhook and resolve:
        try:
            check_target(str(spec.webhook.url), settings.webhook_allowed_hosts)
        except TargetRefused as exc:
            problems.append(("webhook.url", str(exc), "webhook_target_not_allowed"))
    return problems


def check_access(spec: JobSpec, settings: TrainingSettings) -> None:
    """The runner's re-check: Unprocessable when the spec reads what settings do not allow."""
    _raise(access_problems(spec, settings, resolve=False))


def check_uris(spec: JobSpec, settings: TrainingSettings) -> None:
    """Raise Unprocessable naming each field whose URI is not allowed or names nothing, and
    a webhook whose target may not be called."""
    problems = access_problems(spec, settings, resolve=True)
    refused = {field for field, _, _ in problems}
    for field, uri in _data_fields(spec).items():
        if field in refused:
            continue
        try:
            found = uri_exists(uri, settings)
            message = f"{uri} does not exist"
        except UriError as exc:
            found, message = False, str(exc)
        if not found:
            problems.append((field, message, "uri_not_found"))
    _raise(problems)


def _raise(problems: list[Problem]) -> None:
    if problems:
        raise Unprocessable(
            "; ".join(f"{field}: {message}" for field, message, _ in problems),
            errors=[
                {"loc": "body/" + field.replace(".", "/"), "msg": message, "type": kind}
                for field, message, kind in problems
            ],
        )
