"""NCI Imaging Data Commons as a :class:`~static_dicomweb.sources.Source`.

Series are selected from the ``idc-index`` package's offline index (IDC data
release v25 with ``idc-index-data`` 25.0.5: 592,600 NLST rows, of which the
original images have no ``analysis_result_id``).  Files are read anonymously
from ``s3://idc-open-data/<crdc_series_uuid>/<instance-uuid>.dcm``: the names
are not SOP Instance UIDs, so each fetched series goes to
``dest/<SeriesInstanceUID>/`` and the converter reads the UIDs from the files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from static_dicomweb.errors import InvalidUIDError, RejectedInstanceError
from static_dicomweb.keys import validate_uid
from static_dicomweb.s3store import parse_s3_url
from static_dicomweb.sources import SeriesRef

log = logging.getLogger(__name__)

DEFAULT_BUCKET = "idc-open-data"
COMPLETE_MARKER = ".complete"


class IdcCountError(RejectedInstanceError):
    """A series whose S3 prefix holds another number of files than the index's ``instanceCount``."""


def _rows(index: Any, collection: str, modalities: set[str],
          analysis: bool) -> Iterator[Mapping[str, Any]]:
    if not hasattr(index, "to_dict"):
        yield from index
        return
    # a pandas DataFrame (idc-index): filter there, not row by row
    keep = index["collection_id"].str.lower() == collection
    if modalities:
        keep &= index["Modality"].str.upper().isin(modalities)
    if not analysis:
        keep &= index["analysis_result_id"].isna()
    columns = ["collection_id", "analysis_result_id", "SeriesInstanceUID", "StudyInstanceUID",
               "PatientID", "Modality", "instanceCount", "series_aws_url"]
    yield from index.loc[keep, columns].to_dict("records")


class IdcSource:
    """IDC series of one collection, original images by default.

    Parameters
    ----------
    collection
        IDC ``collection_id`` (lower case, e.g. ``"nlst"``).
    index
        The series index: a pandas DataFrame with idc-index's columns, or
        dicts with them.  Default: ``idc_index.IDCClient().index``, offline.
    client
        A boto3 S3 client; default an anonymous (unsigned) one, at
        ``endpoint_url`` or AWS.
    modalities
        Keep series of these modalities (empty: all).
    include_analysis_results
        Also list derived series (e.g. TotalSegmentator SEG, ``analysis_result_id`` set).
    """

    def __init__(self, collection: str = "nlst", *, index: Any = None, client: Any = None,
                 endpoint_url: str | None = None, modalities: Iterable[str] = ("CT",),
                 include_analysis_results: bool = False) -> None:
        self.collection = collection.lower()
        self._index = index
        self._client = client
        self.endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
        self.modalities = {m.upper() for m in modalities}
        self.include_analysis_results = include_analysis_results

    @property
    def index(self) -> Any:
        """The series index (loaded from idc-index on first use; no network)."""
        if self._index is None:
            from idc_index import IDCClient  # type: ignore[attr-defined]

            self._index = IDCClient().index  # type: ignore[no-untyped-call]
        return self._index

    @property
    def client(self) -> Any:
        """The S3 client (anonymous by default: IDC's buckets are public)."""
        if self._client is None:
            import boto3
            from botocore import UNSIGNED
            from botocore.config import Config

            self._client = boto3.client("s3", endpoint_url=self.endpoint_url, config=Config(
                signature_version=UNSIGNED, retries={"mode": "adaptive", "max_attempts": 10}))
        return self._client

    def list_series(self, *, since: datetime | None = None,
                    until: datetime | None = None) -> Iterator[SeriesRef]:
        """Series of the collection in the index.

        IDC versions data by release, not by date: ``since``/``until`` select
        nothing finer than the index in use, so they are accepted and logged.
        """
        if since or until:
            log.info("IDC index v25 has no change dates; listing the whole collection")
        for row in _rows(self.index, self.collection, self.modalities,
                         self.include_analysis_results):
            if str(row.get("collection_id", "")).lower() != self.collection:
                continue
            analysis = row.get("analysis_result_id")
            if analysis == analysis and analysis and not self.include_analysis_results:  # NaN != NaN
                continue
            if self.modalities and str(row.get("Modality", "")).upper() not in self.modalities:
                continue
            try:
                uid = validate_uid(row["SeriesInstanceUID"], what="SeriesInstanceUID")
            except InvalidUIDError as exc:
                log.warning("IDC index row skipped: %s", exc)
                continue
            yield SeriesRef(series_uid=uid, study_uid=str(row.get("StudyInstanceUID", "")),
                            patient_id=str(row.get("PatientID", "")),
                            modality=str(row.get("Modality", "")),
                            instances=int(row.get("instanceCount") or 0),
                            location=str(row["series_aws_url"]).removesuffix("*"))

    def fetch(self, ref: SeriesRef, dest: Path) -> list[Path]:
        """Download the series' files to ``dest/<SeriesInstanceUID>/``; verified, resumable.

        Files already there with the S3 object's size are kept; the count is
        checked against the index; a ``.complete`` marker makes reruns free.
        """
        uid = validate_uid(ref.series_uid, what="SeriesInstanceUID")
        folder = Path(dest) / uid
        if (folder / COMPLETE_MARKER).exists():
            return sorted(p for p in folder.iterdir() if p.name != COMPLETE_MARKER)
        bucket, prefix = parse_s3_url(ref.location)
        prefix += "/"  # the series' folder, not every key that starts with its name
        folder.mkdir(parents=True, exist_ok=True)
        paginator = self.client.get_paginator("list_objects_v2")
        objects = [o for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
                   for o in page.get("Contents", [])]
        paths = []
        for obj in objects:
            name = obj["Key"].rsplit("/", 1)[-1]
            if not name or name.startswith("."):
                continue
            target = folder / name
            if not (target.exists() and target.stat().st_size == obj["Size"]):
                part = target.with_name(target.name + ".part")
                self.client.download_file(bucket, obj["Key"], str(part))
                part.replace(target)
            paths.append(target)
        if ref.instances and len(paths) != ref.instances:
            raise IdcCountError(ref.location, f"series {uid}: the IDC index lists {ref.instances} "
                                              f"instance(s) but the bucket holds {len(paths)}")
        (folder / COMPLETE_MARKER).write_text(f"{len(paths)}\n")
        log.info("fetched series %s: %d files from %s", uid, len(paths), ref.location)
        return sorted(paths)
