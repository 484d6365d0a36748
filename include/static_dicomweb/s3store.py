"""A site in an S3 bucket (or any S3 API: MinIO, moto), behind the same store protocol.

Every object is written with its Content-Type, Content-Encoding, Cache-Control
and user metadata, so S3 serves it exactly as ``serve`` serves a folder.  The
client is made on first use (never in the constructor), with botocore's
adaptive retries for throttling and 5xx answers.

Writers agree through S3's conditional writes: a create-only put sends
``If-None-Match: *`` (S3 answers 412 when the key exists), and the writers'
lock (:meth:`S3Store.lock`) is an object created that way, renewed and
released with ``If-Match`` on its own ETag, so a lock that expired and was
taken over is never released or renewed by its old holder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .errors import KeyNotFoundError, ObjectExistsError, StoreError
from .keys import SITE_PREFIX, ObjectSpec
from .store_protocol import META_PREFIX, Piece, Slice

log = logging.getLogger(__name__)

#: S3 multipart uploads need parts of at least 5 MiB (but the last).
PART_SIZE = 8 * 1024 * 1024
#: The writers' lock object (JSON: holder, expiry), under the site's ``_site/``.
LOCK_KEY = f"{SITE_PREFIX}writer-lock.json"
#: How long a lock holds without renewal; the holder renews it every third of that.
LOCK_TTL = 60.0
#: Incomplete multipart uploads older than this are a killed writer's, and are aborted.
STALE_UPLOAD = timedelta(minutes=15)


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

    def exists(self) -> bool:
        """Whether the bucket exists and can be read."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchBucket", "NotFound", "403", "AccessDenied"):
                return False
            raise
        return True

    def put(self, spec: ObjectSpec, pieces: Sequence[Piece],
            meta: dict[str, str] | None = None, *, if_absent: bool = False) -> None:
        """Upload ``spec.key`` with its headers; large bodies as a multipart upload.

        Raises
        ------
        ObjectExistsError
            With ``if_absent``, when the key exists (S3 answers 412 to ``If-None-Match: *``).
        """
        from botocore.exceptions import ClientError

        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self.object_key(spec.key),
                                "ContentType": spec.content_type, "CacheControl": spec.cache_control}
        if spec.content_encoding:
            args["ContentEncoding"] = spec.content_encoding
        if meta:
            args["Metadata"] = dict(meta)
        condition = {"IfNoneMatch": "*"} if if_absent else {}
        in_memory = [p for p in pieces if isinstance(p, (bytes, memoryview))]
        try:
            if len(in_memory) == len(pieces) and sum(len(p) for p in in_memory) < PART_SIZE:
                self.client.put_object(Body=b"".join(in_memory), **args, **condition)
            else:
                self._multipart(args, pieces, condition)
        except ClientError as exc:
            if if_absent and _code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise ObjectExistsError(f"{spec.key}: already in {self.url}") from exc
            raise

    def _multipart(self, args: dict[str, Any], pieces: Sequence[Piece],
                   condition: dict[str, str]) -> None:
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
            self.client.complete_multipart_upload(MultipartUpload={"Parts": parts}, **where,
                                                  **condition)
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
        """The object's headers (with ``Content-Length``, ``ETag`` and ``x-amz-meta-*``), None if absent."""
        from botocore.exceptions import ClientError

        try:
            resp = self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        out = {"Content-Type": resp["ContentType"], "Content-Length": str(resp["ContentLength"]),
               "ETag": resp["ETag"]}
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
    def lock(self, timeout: float = 3600.0) -> Iterator[None]:
        """Exclusive access for aggregation: a lock object made with ``If-None-Match: *``.

        The holder renews it every ``LOCK_TTL / 3`` seconds with ``If-Match``
        on its ETag; a lock not renewed for ``LOCK_TTL`` seconds (its writer
        was killed) is taken over the same way.  Incomplete multipart uploads
        older than ``STALE_UPLOAD`` (a killed writer's) are aborted on entry.

        Raises
        ------
        StoreError
            When the lock cannot be had within ``timeout`` seconds, or was lost
            (not renewed in time) while held.
        """
        etag = self._acquire(timeout)
        lost = threading.Event()
        stop = threading.Event()
        holder = {"etag": etag}

        def renew() -> None:
            while not stop.wait(LOCK_TTL / 3):
                try:
                    holder["etag"] = self._write_lock(IfMatch=holder["etag"])
                except Exception:  # a lock we cannot renew is a lock we may have lost
                    log.exception("%s: could not renew the writers' lock", self.url)
                    lost.set()
                    return

        thread = threading.Thread(target=renew, daemon=True, name="s3-lock-renewal")
        thread.start()
        try:
            self.abort_stale_uploads()
            yield
            if lost.is_set():
                raise StoreError(f"{self.url}: the writers' lock was lost while held")
        finally:
            stop.set()
            thread.join()
            self._release(holder["etag"])

    def _write_lock(self, **condition: str) -> str:
        body = json.dumps({"holder": f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}",
                           "expires": time.time() + LOCK_TTL}).encode()
        resp = self.client.put_object(Bucket=self.bucket, Key=self.object_key(LOCK_KEY), Body=body,
                                      ContentType="application/json", CacheControl="no-store",
                                      **condition)
        return str(resp["ETag"])

    def _acquire(self, timeout: float) -> str:
        from botocore.exceptions import ClientError

        deadline, pause = time.monotonic() + timeout, 0.05
        while True:
            try:
                return self._write_lock(IfNoneMatch="*")
            except ClientError as exc:
                if _code(exc) not in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                    raise
            try:  # held: take it over if its holder stopped renewing it
                resp = self.client.get_object(Bucket=self.bucket, Key=self.object_key(LOCK_KEY))
                held = json.loads(resp["Body"].read())
                if float(held.get("expires", 0)) < time.time():
                    log.warning("%s: taking over the writers' lock of %s (expired)", self.url,
                                held.get("holder"))
                    return self._write_lock(IfMatch=resp["ETag"])
            except ClientError as exc:  # released or taken meanwhile: try again
                if _code(exc) not in ("NoSuchKey", "404", "PreconditionFailed", "412",
                                      "ConditionalRequestConflict"):
                    raise
            if time.monotonic() > deadline:
                raise StoreError(f"{self.url}: the writers' lock ({LOCK_KEY}) is held by another "
                                 f"writer; gave up after {timeout:.0f} s")
            time.sleep(pause)
            pause = min(pause * 2, 2.0)

    def _release(self, etag: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.object_key(LOCK_KEY), IfMatch=etag)
        except ClientError as exc:  # taken over after expiring: it is not ours to delete
            log.warning("%s: the writers' lock was not ours any more: %s", self.url, exc)

    def abort_stale_uploads(self, older_than: timedelta = STALE_UPLOAD) -> int:
        """Abort incomplete multipart uploads under the site older than ``older_than``.

        Returns
        -------
        int
            How many were aborted (a killed writer's leftovers, which cost storage).
        """
        prefix = f"{self.prefix}/" if self.prefix else ""
        cutoff = datetime.now(UTC) - older_than
        aborted = 0
        paginator = self.client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for upload in page.get("Uploads", []):
                if upload["Initiated"] < cutoff:
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                                       UploadId=upload["UploadId"])
                    aborted += 1
        if aborted:
            log.info("%s: aborted %d incomplete multipart uploads left by killed writers",
                     self.url, aborted)
        return aborted


def _code(exc: Any) -> str:
    """The error code of a botocore ``ClientError``."""
    return str(exc.response.get("Error", {}).get("Code", ""))
