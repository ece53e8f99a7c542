"""Reading local paths, file:// and s3:// URIs: datasets and pretrained weights.

The one place `models/` talks to S3 (boto3, imported lazily). The service's artifact store
builds its client with `s3_client` too, so endpoint and credential handling is the same.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse


class UriError(ValueError):
    """A URI that is malformed, unsupported or names nothing."""


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        parsed = urlparse(uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise UriError(f"{uri!r} is not an s3://bucket/key URI")
        return cls(parsed.netloc, parsed.path.lstrip("/"))


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def local_path(uri: str) -> Path:
    """The path named by a plain path or a file:// URI."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme in ("", None) or len(parsed.scheme) == 1:  # "C:" on Windows
        return Path(uri)
    raise UriError(
        f"unsupported URI scheme {parsed.scheme!r} in {uri!r} (use a path, file:// or s3://)"
    )


def absolute_uri(uri: str, base: Path | None = None) -> str:
    """`uri` with a relative local path made absolute against `base` (default: the current
    directory); s3:// and absolute paths come back unchanged. A job resolves its paths once,
    where they were written, since its runner works in a folder of its own."""
    if is_s3(uri) or urlparse(uri).scheme == "file" or local_path(uri).is_absolute():
        return uri
    # Lexically (normpath, not resolve): no file system call, so a path that names nothing,
    # or could not (a NUL byte), is left to the existence check to report.
    return os.path.normpath((base or Path.cwd()) / local_path(uri))


def s3_client(endpoint_url: str | None = None, region: str | None = None) -> Any:
    """A boto3 S3 client; endpoint from the argument, else SCANTUNE_S3_ENDPOINT_URL or AWS's own."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:  # pragma: no cover - boto3 is a core dependency
        raise ImportError("s3:// URIs need boto3: pip install scantune") from exc
    endpoint = endpoint_url or os.environ.get("SCANTUNE_S3_ENDPOINT_URL") or None
    config = Config(
        retries={"max_attempts": 5, "mode": "standard"}, s3={"addressing_style": "path"}
    )
    return boto3.client("s3", endpoint_url=endpoint, region_name=region, config=config)


def load_s3_description() -> None:
    """Read the S3 service description into boto3's default session, which `s3_client`
    uses: a server's master calls this before it forks, so each worker's first client is
    built from memory. No credentials are looked up and no client is made.

    Through public API only: a botocore session of its own, loaded, then made the default.
    A default session someone set up already is left alone (its first client loads it)."""
    import boto3
    import botocore.session

    if boto3.DEFAULT_SESSION is not None:
        return
    core = botocore.session.get_session()
    core.get_service_model("s3")
    core.get_component("endpoint_resolver")
    boto3.setup_default_session(botocore_session=core)


def fetch(uri: str, dest_dir: Path, *, endpoint_url: str | None = None) -> Path:
    """Make the file or folder at `uri` available locally and return its local path.

    Local paths are returned as they are (nothing copied); s3:// objects or prefixes are
    downloaded under `dest_dir`.
    """
    if not is_s3(uri):
        path = local_path(uri)
        if not path.exists():
            raise UriError(f"{uri} does not exist")
        return path
    loc = S3Location.parse(uri)
    client = s3_client(endpoint_url)
    root = dest_dir.resolve()
    target = _inside(root, root / loc.bucket / loc.key.rstrip("/"), uri)
    keys = _list_keys(client, loc)
    if not keys:
        raise UriError(f"{uri} does not exist (no object or prefix with that name)")
    if keys == [loc.key]:
        target.parent.mkdir(parents=True, exist_ok=True)
        _download(client, loc.bucket, loc.key, target)
        return target
    prefix = loc.key.rstrip("/") + "/"
    files = [(key, key[len(prefix) :]) for key in keys]
    # Every key is checked before any is fetched: an object named "x/../../etc" would
    # otherwise be written outside the download folder.
    outs = [
        (key, _inside(root, target / rel, f"s3://{loc.bucket}/{key}"))
        for key, rel in files
        if rel and not rel.endswith("/")
    ]
    for key, out in outs:
        out.parent.mkdir(parents=True, exist_ok=True)
        _download(client, loc.bucket, key, out)
    return target


def _inside(root: Path, path: Path, uri: str) -> Path:
    """`path` made absolute, or UriError when it leaves `root` ('..' in the key)."""
    resolved = path.resolve()
    if resolved != root and not resolved.is_relative_to(root):
        raise UriError(f"{uri}: the key climbs out of the download folder ('..'); refusing it")
    return resolved


def _list_keys(client: Any, loc: S3Location) -> list[str]:
    from botocore.exceptions import ClientError

    keys: list[str] = []
    try:
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=loc.bucket, Prefix=loc.key):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
    except ClientError as exc:
        raise UriError(
            f"s3://{loc.bucket}/{loc.key}: {exc.response['Error'].get('Message', exc)}"
        ) from exc
    prefix = loc.key.rstrip("/") + "/"
    return [k for k in keys if k == loc.key or k.startswith(prefix)]


def _download(client: Any, bucket: str, key: str, out: Path) -> None:
    partial = out.with_name(out.name + ".partial")
    client.download_file(bucket, key, str(partial))
    partial.replace(out)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_tree(path: Path) -> str:
    """Content hash of a file, or of a folder's files (relative names and bytes, sorted)."""
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode())
        digest.update(bytes.fromhex(sha256_file(file)))
    return digest.hexdigest()


def copy_to(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dest)
