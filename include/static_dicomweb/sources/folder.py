"""Local folders and S3 prefixes of Part 10 files as sources."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from static_dicomweb.convert import scan_inputs
from static_dicomweb.sources import SeriesRef

log = logging.getLogger(__name__)
#: The series key of files whose header cannot be read: converting them rejects each one with
#: its reason, so nothing is dropped silently.
UNSORTED = "unsorted"


def _in_window(moment: datetime, since: datetime | None, until: datetime | None) -> bool:
    return (since is None or moment >= since) and (until is None or moment < until)


class FolderSource:
    """Part 10 files under local folders, grouped by series from their headers.

    With ``since``/``until``, only series with a file modified in that window
    are listed (scheduled refreshes and backfills); the whole series is then
    converted again, which is idempotent.
    """

    def __init__(self, *roots: str | Path) -> None:
        self.roots = [Path(r) for r in roots]
        self._files: dict[str, list[str]] = {}

    def list_series(self, *, since: datetime | None = None,
                    until: datetime | None = None) -> Iterator[SeriesRef]:
        """One :class:`SeriesRef` per series; its files are kept for :meth:`fetch`."""
        groups: dict[tuple[str, str], list[str]] = {}
        changed: set[tuple[str, str]] = set()
        paths, skipped = scan_inputs(self.roots)
        for entry in skipped:  # hidden files, FIFOs, sockets, devices: named, never opened
            log.warning("skipped %s: %s", entry.path, entry.reason)
        for path in paths:
            try:
                ds = dcmread(path, stop_before_pixels=True,
                             specific_tags=["StudyInstanceUID", "SeriesInstanceUID"])
                key = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID))
            except (InvalidDicomError, AttributeError, OSError, ValueError, EOFError, KeyError,
                    TypeError):
                key = ("", UNSORTED)
            groups.setdefault(key, []).append(str(path))
            if since or until:
                mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC)
                if _in_window(mtime, since, until):
                    changed.add(key)
        for (study, series), files in sorted(groups.items()):
            if (since or until) and (study, series) not in changed:
                continue
            self._files[series] = files
            yield SeriesRef(series_uid=series, study_uid=study, instances=len(files),
                            location="\n".join(files))

    def fetch(self, ref: SeriesRef, dest: Path) -> list[Path]:
        """The series' files where they are (nothing is copied)."""
        return [Path(p) for p in (self._files.get(ref.series_uid) or ref.location.split("\n"))]


class S3PrefixSource:
    """Part 10 files under ``s3://bucket/prefix``: one :class:`SeriesRef` per folder of files.

    Folders are a storage convention, not DICOM: the converter groups what it
    reads by the UIDs in the files.  With ``since``/``until``, only folders
    with an object modified in the window are listed.
    """

    def __init__(self, url: str, *, client: Any = None, endpoint_url: str | None = None) -> None:
        from static_dicomweb.s3store import parse_s3_url

        self.bucket, self.prefix = parse_s3_url(url)
        self._client = client
        self.endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL")

    @property
    def client(self) -> Any:
        """The boto3 S3 client, made on first use."""
        if self._client is None:
            import boto3

            self._client = boto3.client("s3", endpoint_url=self.endpoint_url)
        return self._client

    def list_series(self, *, since: datetime | None = None,
                    until: datetime | None = None) -> Iterator[SeriesRef]:
        """One ref per folder holding objects (its key prefix in ``location``)."""
        folders: dict[str, int] = {}
        changed: set[str] = set()
        paginator = self.client.get_paginator("list_objects_v2")
        start = f"{self.prefix}/" if self.prefix else ""
        for page in paginator.paginate(Bucket=self.bucket, Prefix=start):
            for obj in page.get("Contents", []):
                folder = obj["Key"].rsplit("/", 1)[0] if "/" in obj["Key"] else ""
                folders[folder] = folders.get(folder, 0) + 1
                if _in_window(obj["LastModified"], since, until):
                    changed.add(folder)
        for folder, count in sorted(folders.items()):
            if (since or until) and folder not in changed:
                continue
            yield SeriesRef(series_uid=folder.replace("/", "_") or "root", instances=count,
                            location=f"s3://{self.bucket}/{folder}/")

    def fetch(self, ref: SeriesRef, dest: Path) -> list[Path]:
        """Download the folder's objects to ``dest/<folder>/`` (files already there are kept)."""
        from static_dicomweb.s3store import parse_s3_url

        bucket, prefix = parse_s3_url(ref.location)
        prefix = f"{prefix}/" if prefix else ""  # the folder's objects, not a sibling's of its name
        out = Path(dest) / ref.series_uid
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
            for obj in page.get("Contents", []):
                target = out / obj["Key"].rsplit("/", 1)[-1]
                if not (target.exists() and target.stat().st_size == obj["Size"]):
                    part = target.with_name(target.name + ".part")
                    self.client.download_file(bucket, obj["Key"], str(part))
                    part.replace(target)
                paths.append(target)
        log.info("fetched %d files from %s", len(paths), ref.location)
        return sorted(paths)
