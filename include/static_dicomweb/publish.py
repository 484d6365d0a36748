"""``publish``: put a site folder on S3, every object with its headers.

A folder site is portable (its headers follow from each key and its bytes),
so publishing is a copy that turns those headers into S3 object metadata:
Content-Type, Content-Encoding, Cache-Control, user metadata, and the
SHA-256 of the bytes (``x-amz-meta-body-sha256``).

Order keeps readers safe while it runs: the objects of instances first, then
series-level objects, then study-level ones, then the root indexes and query
answers, and the manifest last; each wave is complete before the next one
starts, so an index never names an object that is not there yet.  An object
already on S3 with the same SHA-256 is skipped (a rerun after an interruption
uploads what is left, a second run uploads nothing).  Nothing is deleted
unless asked; then only after every upload, and never the manifest.
Uploads go through boto3's transfer manager (multipart for large bodies,
parallel, aborted on failure), under the site's writers' lock, so a publish
and an aggregation into the same prefix never interleave.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from . import keys
from .errors import StoreError
from .s3store import S3Store
from .store import META_PREFIX, LocalStore

log = logging.getLogger(__name__)

#: The user metadata naming the SHA-256 of an object's bytes, which lets a rerun skip it.
BODY_SHA256 = "body-sha256"
_INSTANCE = re.compile(r"studies/[^/]+/series/[^/]+/instances/[^/]+(?:/.*)?")
_SERIES = re.compile(r"studies/[^/]+/series/[^/]+(?:/.*)?|_site/series/.*")
_STUDY = re.compile(r"studies/[^/]+/.*")
WAVES = ("instances", "series", "studies", "indexes", "manifest")


def wave_of(key: str) -> int:
    """The upload wave of ``key``: objects before the indexes that list them, the manifest last."""
    if key == keys.manifest().key:
        return 4
    if _INSTANCE.fullmatch(key):
        return 0
    if _SERIES.fullmatch(key):
        return 1
    if _STUDY.fullmatch(key):
        return 2
    return 3


@dataclass
class PublishResult:
    """What one ``publish`` did."""

    uploaded: list[str] = field(default_factory=list)
    skipped: int = 0
    deleted: list[str] = field(default_factory=list)
    bytes_uploaded: int = 0


def publish(site: LocalStore, dest: S3Store, *, delete: bool = False, workers: int = 16,
            on_progress: Callable[[int, int], None] | None = None) -> PublishResult:
    """Upload every object of the folder ``site`` to ``dest`` with its headers.

    Parameters
    ----------
    site
        A site folder.
    dest
        The S3 site (``s3://bucket/prefix``).
    delete
        Also remove objects under ``dest`` that the folder does not hold (after all uploads).
    workers
        Parallel uploads.
    on_progress
        Called with (objects done, objects in all) as objects are checked or uploaded.

    Raises
    ------
    StoreError
        When ``site`` is no site folder (it has no manifest), or its headers cannot be told.
    """
    from boto3.s3.transfer import TransferConfig, create_transfer_manager

    if site.headers(keys.manifest().key) is None:
        raise StoreError(f"{site.url}: not a site folder (no {keys.manifest().key}); nothing published")
    all_keys = sorted(site.walk(), key=lambda k: (wave_of(k), k))
    result = PublishResult()
    done = 0
    config = TransferConfig(max_concurrency=workers, multipart_threshold=64 * 1024 * 1024,
                            multipart_chunksize=64 * 1024 * 1024)
    with dest.lock(), ThreadPoolExecutor(workers, thread_name_prefix="publish-check") as pool, \
            create_transfer_manager(dest.client, config) as manager:
        for wave in range(len(WAVES)):
            batch = [k for k in all_keys if wave_of(k) == wave]
            futures = []
            for key, needed, args in pool.map(lambda k: _plan(site, dest, k), batch):
                if not needed:
                    result.skipped += 1
                    done += 1
                    continue
                futures.append((key, args[1], manager.upload(
                    str(site.path(key)), dest.bucket, dest.object_key(key), extra_args=args[0])))
            for key, size, future in futures:
                future.result()  # the first failure stops the run: a rerun resumes
                result.uploaded.append(key)
                result.bytes_uploaded += size
                done += 1
                if on_progress:
                    on_progress(done, len(all_keys))
            if batch:
                log.info("publish %s: %s wave: %d uploaded, %d already there", dest.url, WAVES[wave],
                         len(futures), len(batch) - len(futures))
        if delete:
            result.deleted = _delete_extra(dest, set(all_keys))
    return result


def _plan(site: LocalStore, dest: S3Store, key: str) -> tuple[str, bool, tuple[dict[str, Any], int]]:
    """Whether ``key`` must be uploaded, and its upload arguments (headers, size)."""
    headers = site.headers(key)
    if headers is None:
        raise StoreError(f"{key}: vanished from {site.url} while publishing")
    path = site.path(key)
    with open(path, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
        size = os.fstat(fh.fileno()).st_size
    args: dict[str, Any] = {"ContentType": headers["Content-Type"],
                            "CacheControl": headers["Cache-Control"]}
    if "Content-Encoding" in headers:
        args["ContentEncoding"] = headers["Content-Encoding"]
    meta = {name[len(META_PREFIX):]: value for name, value in headers.items()
            if name.startswith(META_PREFIX)}
    args["Metadata"] = {**meta, BODY_SHA256: digest}
    held = dest.headers(key)
    same = held is not None and held.get(META_PREFIX + BODY_SHA256) == digest and all(
        held.get(name) == value for name, value in headers.items())
    return key, not same, (args, size)


def _delete_extra(dest: S3Store, wanted: Iterable[str]) -> list[str]:
    """Remove the objects under ``dest`` that are not in ``wanted`` (never the writers' lock)."""
    from .s3store import LOCK_KEY

    keep = set(wanted) | {LOCK_KEY}
    extra = sorted(k for k in dest.walk() if k not in keep)
    for key in extra:
        dest.delete(key)
    if extra:
        log.info("publish %s: deleted %d objects the folder does not hold", dest.url, len(extra))
    return extra
