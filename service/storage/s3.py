"""Artifact store on S3 or any S3-compatible endpoint, over boto3."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from models.uri import S3Location, s3_client
from service.storage.base import CHUNK, ArtifactStore, ObjectNotFound, StoreError


class S3Store(ArtifactStore):
    """s3://bucket/prefix; credentials from the usual AWS chain."""

    def __init__(
        self, uri: str, *, endpoint_url: str | None = None, region: str | None = None
    ) -> None:
        loc = S3Location.parse(uri)
        self.bucket = loc.bucket
        self.prefix = loc.key.strip("/")
        self.uri = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        self.client: Any = s3_client(endpoint_url, region)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _errors(self) -> tuple[type[Exception], ...]:
        from botocore.exceptions import BotoCoreError, ClientError

        return (BotoCoreError, ClientError)

    def put_bytes(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except self._errors() as exc:
            raise StoreError(f"cannot write {self.url(key)}: {exc}") from exc

    def put_file(self, key: str, path: Path) -> None:
        try:
            self.client.upload_file(str(path), self.bucket, self._key(key))
        except self._errors() as exc:
            raise StoreError(f"cannot upload {path} to {self.url(key)}: {exc}") from exc
        except Exception as exc:  # boto3's S3UploadFailedError is not a ClientError
            raise StoreError(f"cannot upload {path} to {self.url(key)}: {exc}") from exc

    def get_bytes(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            return response["Body"].read()  # type: ignore[no-any-return]
        except ClientError as exc:
            if exc.response["Error"].get("Code") in ("NoSuchKey", "404"):
                raise ObjectNotFound(key) from exc
            raise StoreError(f"cannot read {self.url(key)}: {exc}") from exc
        except self._errors() as exc:
            raise StoreError(f"cannot read {self.url(key)}: {exc}") from exc

    def open_stream(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        """GET the object now (so a missing key raises here) and read its body as it is sent."""
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response["Error"].get("Code") in ("NoSuchKey", "404"):
                raise ObjectNotFound(key) from exc
            raise StoreError(f"cannot read {self.url(key)}: {exc}") from exc
        except self._errors() as exc:
            raise StoreError(f"cannot read {self.url(key)}: {exc}") from exc
        return _body_chunks(response["Body"], chunk_size)

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response["Error"].get("Code") in ("NoSuchKey", "404", "NotFound"):
                return False
            raise StoreError(f"cannot stat {self.url(key)}: {exc}") from exc

    def _pages(self, prefix: str, delimiter: str | None) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": self._key(prefix.rstrip("/") + "/"),
        }
        if delimiter:
            kwargs["Delimiter"] = delimiter
        try:
            return list(self.client.get_paginator("list_objects_v2").paginate(**kwargs))
        except self._errors() as exc:
            raise StoreError(f"cannot list {self.url(prefix)}: {exc}") from exc

    def list_keys(self, prefix: str) -> list[str]:
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys = [
            obj["Key"][strip:]
            for page in self._pages(prefix, None)
            for obj in page.get("Contents", [])
        ]
        return sorted(keys)

    def list_children(self, prefix: str) -> list[str]:
        base = self._key(prefix.rstrip("/") + "/")
        names: set[str] = set()
        for page in self._pages(prefix, "/"):
            names.update(
                p["Prefix"][len(base) :].rstrip("/") for p in page.get("CommonPrefixes", [])
            )
            names.update(o["Key"][len(base) :] for o in page.get("Contents", []))
        return sorted(n for n in names if n)

    def delete_prefix(self, prefix: str) -> None:
        keys = [self._key(k) for k in self.list_keys(prefix)]
        for start in range(0, len(keys), 1000):
            chunk = [{"Key": k} for k in keys[start : start + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk})

    def check(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except self._errors() as exc:
            raise StoreError(f"bucket {self.bucket} is not reachable: {exc}") from exc


def _body_chunks(body: Any, chunk_size: int) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(chunk_size)
    finally:
        body.close()
