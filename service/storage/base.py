"""The artifact-store interface: a flat key space of immutable-ish objects under one root."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

CHUNK = 256 * 1024
"""Bytes per chunk when an object is streamed."""


class StoreError(RuntimeError):
    """The store could not be reached or refused an operation."""


class ObjectNotFound(KeyError):
    """No object under that key."""


class ArtifactStore(ABC):
    """Keys are '/'-separated paths relative to the store's root URI."""

    uri: str

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Write an object atomically: readers see the old object or the whole new one."""

    @abstractmethod
    def put_file(self, key: str, path: Path) -> None:
        """Upload a local file atomically (multipart for large files on S3)."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """The object's bytes; raises ObjectNotFound."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list_keys(self, prefix: str) -> list[str]:
        """Every key under `prefix` (recursive), sorted."""

    @abstractmethod
    def list_children(self, prefix: str) -> list[str]:
        """Names one level below `prefix` (like `ls`), sorted."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> None:
        """Remove every object under `prefix`."""

    @abstractmethod
    def check(self) -> None:
        """Raise StoreError when the store is not reachable (readiness)."""

    def url(self, key: str) -> str:
        return f"{self.uri.rstrip('/')}/{key}"

    def get_text(self, key: str) -> str:
        return self.get_bytes(key).decode()

    def open_stream(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        """The object's bytes in chunks, for streaming a download without holding it whole;
        raises ObjectNotFound here, before the first chunk. Stores override this to stream."""
        data = self.get_bytes(key)
        return iter([data[i : i + chunk_size] for i in range(0, len(data), chunk_size)])


_SCHEMES = {
    "file": "service.storage.local:LocalStore",
    "s3": "service.storage.s3:S3Store",
    "": "service.storage.local:LocalStore",
}


def open_store(
    uri: str, *, endpoint_url: str | None = None, region: str | None = None
) -> ArtifactStore:
    """The store for `uri`: file:///path (or a plain path) or s3://bucket/prefix."""
    scheme = urlparse(uri).scheme
    target = _SCHEMES.get(scheme)
    if target is None:
        raise StoreError(
            f"unsupported artifact URI {uri!r}: use file:///path or s3://bucket/prefix"
        )
    module_name, class_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if scheme == "s3":
        return cls(uri, endpoint_url=endpoint_url, region=region)  # type: ignore[no-any-return]
    return cls(uri)  # type: ignore[no-any-return]
