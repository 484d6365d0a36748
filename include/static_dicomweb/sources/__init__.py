"""Where Part 10 files come from: a local folder, an S3 prefix, TCIA's NBIA API, NCI IDC.

Every source lists series (optionally only those changed in a time window, for
scheduled refreshes and backfills) and fetches one series' files into a local
folder, verifying what it got.  Sources never import Airflow.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class SeriesRef:
    """One series at a source, as its listing describes it."""

    series_uid: str
    study_uid: str = ""
    patient_id: str = ""
    modality: str = ""
    #: Instances the source says the series has (0: unknown); fetches verify against it.
    instances: int = 0
    #: Where the source keeps it (a folder, an S3 prefix, an API name).
    location: str = ""


class Source(Protocol):
    """A place that holds DICOM series."""

    def list_series(self, *, since: datetime | None = None,
                    until: datetime | None = None) -> Iterator[SeriesRef]:
        """Series at the source; with ``since``/``until``, only those changed in that window."""

    def fetch(self, ref: SeriesRef, dest: Path) -> list[Path]:
        """Put the series' Part 10 files under ``dest`` (resuming, verified); return them."""


def skip_localizers(refs: Iterator[SeriesRef], min_instances: int = 4) -> Iterator[SeriesRef]:
    """Leave out series of 1–3 images (NLST has ~70k CT localizers); unknown counts are kept."""
    return (r for r in refs if r.instances == 0 or r.instances >= min_instances)


def open_source(spec: str, *, client: object = None, **options: object) -> Source:
    """The source named by ``spec``.

    ``nbia:COLLECTION`` (TCIA's NBIA API), ``idc:COLLECTION`` (NCI IDC),
    ``s3://bucket/prefix`` (Part 10 files on S3, read with ``client`` when given: in
    Airflow, the ``aws_conn_id`` connection's), anything else a local folder.
    """
    if spec.startswith("nbia:"):
        from .nbia import NbiaSource

        return NbiaSource(spec.removeprefix("nbia:") or "NLST", **options)  # type: ignore[arg-type]
    if spec.startswith("idc:"):
        from .idc import IdcSource

        return IdcSource(spec.removeprefix("idc:") or "nlst", **options)  # type: ignore[arg-type]
    from static_dicomweb.store import is_s3

    if is_s3(spec):
        from .folder import S3PrefixSource

        return S3PrefixSource(spec, client=client, **options)  # type: ignore[arg-type]
    from .folder import FolderSource

    return FolderSource(spec)
