"""The pipeline's steps as plain functions: discover, plan, convert a batch, aggregate, publish.

The Airflow DAG ``dicomweb_site`` wires these; each step is also callable and
testable without Airflow.  What passes between steps is small and JSON-able
(paths, UIDs and counts, never pixel data).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from .aggregate import aggregate
from .convert import convert_files
from .profiles import get_profile
from .sources import SeriesRef, open_source, skip_localizers
from .store import Store

log = logging.getLogger(__name__)

#: Airflow refuses to map a task over more than this many items by default.
MAX_MAP_LENGTH = 1024
class BatchResult(TypedDict):
    """What one mapped conversion returns (it goes through XCom)."""

    instances: int
    series: list[list[str]]
    rejected: list[dict[str, str]]
    #: Inputs that are not files to convert (hidden, FIFOs, ...): path and reason; absent in
    #: results of older versions.
    skipped_files: NotRequired[list[dict[str, str]]]
    seconds: float


class Summary(TypedDict):
    """What aggregation returns."""

    site: str
    instances: int
    series: int
    rejected: list[dict[str, str]]


def discover(source: str, *, since: datetime | None = None, until: datetime | None = None,
             series_uids: Iterable[str] = (), patient_ids: Iterable[str] = (), limit: int = 0,
             skip_localizer_series: bool = True, client: Any = None) -> list[SeriesRef]:
    """The series to convert from ``source`` (see :func:`static_dicomweb.sources.open_source`).

    ``since``/``until`` (a scheduled run's data interval) keep what changed in
    it; explicit UIDs and patients narrow it; localizers (1–3 images) are left
    out by default; ``limit`` caps the count for trials.
    """
    refs: Iterable[SeriesRef] = open_source(source, client=client).list_series(since=since,
                                                                              until=until)
    wanted, patients = set(series_uids), set(patient_ids)
    if wanted:
        refs = (r for r in refs if r.series_uid in wanted)
    if patients:
        refs = (r for r in refs if r.patient_id in patients)
    if skip_localizer_series:
        refs = skip_localizers(iter(refs))
    found = list(refs)
    log.info("%s: %d series to convert", source, len(found))
    return found[:limit] if limit else found


def plan_batches(refs: Sequence[SeriesRef], batch_size: int,
                 max_batches: int = MAX_MAP_LENGTH) -> list[list[dict[str, Any]]]:
    """Batches of whole series for a mapped task: at most ``max_batches`` of them.

    ``batch_size`` is the number of series per batch; it grows when there are
    more than ``batch_size * max_batches`` series (204,346 NLST series fit in
    1,024 batches of 200).  Refs become dicts, for XCom.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    size = max(batch_size, math.ceil(len(refs) / max_batches))
    return [[asdict(r) for r in refs[i:i + size]] for i in range(0, len(refs), size)]


def download_batch(source: str, refs: Sequence[dict[str, Any]], dest: str | Path, *,
                   client: Any = None) -> list[str]:
    """Fetch a batch of series into ``dest`` (resumable, verified); the local files to convert.

    ``client``: the S3 client of an ``s3://`` source (Airflow passes its connection's).
    """
    opened = open_source(source, client=client)
    return [str(p) for ref in refs for p in opened.fetch(SeriesRef(**ref), Path(dest))]


def convert_batch(files: Sequence[str], store: Store, profile: str = "default",
                  workers: int = 1) -> BatchResult:
    """Convert one batch: its per-instance objects, no indexes.  Idempotent."""
    result = convert_files(files, store, profile=profile, workers=workers)
    log.info("batch: %d instances of %d series written, %d rejected in %.1f s",
             len(result.written), len(result.touched()), len(result.rejected), result.seconds)
    return {"instances": len(result.written),
            "series": [[study, series] for study, series in result.touched()],
            "rejected": [{"path": r.path, "reason": r.reason} for r in result.rejected],
            "skipped_files": [{"path": s.path, "reason": s.reason} for s in result.skipped],
            "seconds": round(result.seconds, 3)}


def aggregate_batches(results: Iterable[BatchResult], store: Store,
                      profile: str = "default") -> Summary:
    """Merge the batches into the site's indexes (one writer), then the report and manifest."""
    started = time.perf_counter()
    results = list(results)
    touched = sorted({(s[0], s[1]) for r in results for s in r["series"]})
    rejected = sorted((x for r in results for x in r["rejected"]), key=lambda x: x["path"])
    skipped = sorted((x for r in results for x in r.get("skipped_files", [])),
                     key=lambda x: x["path"])
    instances = sum(r["instances"] for r in results)
    report = {"instances": instances, "series": [f"{a}/{b}" for a, b in touched],
              "rejected": rejected, "skipped": skipped}
    aggregate(store, touched, get_profile(profile), report=report)
    log.info("aggregated %d series in %.1f s", len(touched), time.perf_counter() - started)
    return {"site": store.url, "instances": instances, "series": len(touched), "rejected": rejected}
