"""A site in an S3 bucket (or any S3 API: MinIO, moto), behind the same store protocol.

Every object is written with its Content-Type, Content-Encoding, Cache-Control
and user metadata, so S3 serves it exactly as ``serve`` serves a folder.  The
client is made on first use (never in the constructor), with botocore's
adaptive retries for throttling and 5xx answers.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .errors import KeyNotFoundError, StoreError
from .keys import ObjectSpec
from .store import Piece, Slice

log = logging.getLogger(__name__)

#: S3 multipart uploads need parts of at least 5 MiB (but the last).
PART_SIZE = 8 * 1024 * 1024
META_PREFIX = "x-amz-meta-"


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` → (bucket, prefix without slashes at either end).

    Raises
    ------
    StoreError
        If the URL has no bucket.
    """
    if not url.startswith("s3://"):
        raise StoreError(f"{url}: not an s3:// URL")
    bucket, _, prefix = url[len("s3://"):].partition("/")
    if not bucket:
        raise StoreError(f"{url}: no bucket")
    return bucket, prefix.strip("/")


class S3Store:
    """A site under ``s3://bucket/prefix``.

    Parameters
    ----------
    url
        ``s3://bucket/prefix``.
    endpoint_url
        An S3-compatible endpoint; else boto3's own ``AWS_ENDPOINT_URL`` or AWS.
    client
        A ready boto3 S3 client (Airflow passes the Amazon provider's ``S3Hook`` client).
    """

    def __init__(self, url: str, *, endpoint_url: str | None = None, client: Any = None) -> None:
        self.bucket, self.prefix = parse_s3_url(url)
        self.url = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        self.endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
        self._client = client

    def __reduce__(self) -> tuple[Any, ...]:
        # worker processes make their own client
        return (S3Store, (self.url,), {"endpoint_url": self.endpoint_url})

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.endpoint_url = state["endpoint_url"]

    @property
    def client(self) -> Any:
        """The boto3 client, made on first use with adaptive retries."""
        if self._client is None:
            import boto3
            from botocore.config import Config

            config = Config(retries={"mode": "adaptive", "max_attempts": 10},
                            max_pool_connections=32)
            self._client = boto3.client("s3", endpoint_url=self.endpoint_url, config=config)
        return self._client

    def object_key(self, key: str) -> str:
        """The S3 object key of a site key."""
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in key.split("/")):
            raise StoreError(f"key {key!r} is not a clean relative path")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _read_piece(self, piece: Piece) -> bytes:
        if isinstance(piece, (bytes, memoryview)):
            return bytes(piece)
        if isinstance(piece, Slice):
            head = self.headers(piece.key)
            if head is None:
                raise KeyNotFoundError(f"{piece.key}: not in {self.url}")
            size = int(head["Content-Length"])
            end = size - piece.trim_end - 1
            if end < piece.start:
                return b""
            resp = self.client.get_object(Bucket=self.bucket, Key=self.object_key(piece.key),
                                          Range=f"bytes={piece.start}-{end}")
            return bytes(resp["Body"].read())
        return Path(piece).read_bytes()

    def put(self, spec: ObjectSpec, pieces: Sequence[Piece],
            meta: dict[str, str] | None = None) -> None:
        """Upload ``spec.key`` with its headers; large bodies as a multipart upload."""
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self.object_key(spec.key),
                                "ContentType": spec.content_type, "CacheControl": spec.cache_control}
        if spec.content_encoding:
            args["ContentEncoding"] = spec.content_encoding
        if meta:
            args["Metadata"] = dict(meta)
        in_memory = [p for p in pieces if isinstance(p, (bytes, memoryview))]
        if len(in_memory) == len(pieces) and sum(len(p) for p in in_memory) < PART_SIZE:
            self.client.put_object(Body=b"".join(in_memory), **args)
            return
        self._multipart(args, pieces)

    def _multipart(self, args: dict[str, Any], pieces: Sequence[Piece]) -> None:
        upload = self.client.create_multipart_upload(**args)
        upload_id, buffer = upload["UploadId"], bytearray()
        parts: list[dict[str, Any]] = []
        where = {"Bucket": args["Bucket"], "Key": args["Key"], "UploadId": upload_id}
        try:
            for piece in pieces:
                buffer += self._read_piece(piece)
                while len(buffer) >= PART_SIZE:
                    parts.append(self._part(where, len(parts) + 1, bytes(buffer[:PART_SIZE])))
                    del buffer[:PART_SIZE]
            if buffer or not parts:
                parts.append(self._part(where, len(parts) + 1, bytes(buffer)))
            self.client.complete_multipart_upload(MultipartUpload={"Parts": parts}, **where)
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(**where)
            raise

    def _part(self, where: dict[str, Any], number: int, data: bytes) -> dict[str, Any]:
        resp = self.client.upload_part(PartNumber=number, Body=data, **where)
        return {"PartNumber": number, "ETag": resp["ETag"]}

    def get(self, key: str) -> bytes:
        """The stored bytes of ``key``."""
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))
        except self.client.exceptions.NoSuchKey as exc:
            raise KeyNotFoundError(f"{key}: not in {self.url}") from exc
        return bytes(resp["Body"].read())

    def headers(self, key: str) -> dict[str, str] | None:
        """The object's headers (with ``Content-Length`` and ``x-amz-meta-*``), None if absent."""
        from botocore.exceptions import ClientError

        try:
            resp = self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        out = {"Content-Type": resp["ContentType"], "Content-Length": str(resp["ContentLength"])}
        if resp.get("ContentEncoding"):
            out["Content-Encoding"] = resp["ContentEncoding"]
        if resp.get("CacheControl"):
            out["Cache-Control"] = resp["CacheControl"]
        for name, value in (resp.get("Metadata") or {}).items():
            out[META_PREFIX + name] = value
        return out

    def children(self, prefix: str) -> list[str]:
        """Immediate children of a key prefix (``Delimiter='/'`` listing)."""
        full = self.object_key(prefix.rstrip("/")) + "/" if prefix else (
            f"{self.prefix}/" if self.prefix else "")
        names: set[str] = set()
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                names.add(common["Prefix"][len(full):].rstrip("/"))
            for item in page.get("Contents", []):
                names.add(item["Key"][len(full):])
        return sorted(n for n in names if n)

    def delete(self, key: str) -> None:
        """Remove ``key`` (S3 answers success for a missing key too)."""
        self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))

    def walk(self, prefix: str = "") -> Iterator[str]:
        """Every key under ``prefix``."""
        full = self.object_key(prefix.rstrip("/")) + "/" if prefix else (
            f"{self.prefix}/" if self.prefix else "")
        strip = len(self.prefix) + 1 if self.prefix else 0
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            for item in page.get("Contents", []):
                yield item["Key"][strip:]

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """No lock: S3 has none.  One aggregator at a time (the DAG's aggregate task) is the rule."""
        yield
