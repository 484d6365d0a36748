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
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from .aggregate import aggregate
from .convert import collect_files, convert_files
from .profiles import get_profile
from .store import Store

log = logging.getLogger(__name__)

#: Airflow refuses to map a task over more than this many items by default.
MAX_MAP_LENGTH = 1024
#: Files whose header cannot be read are grouped under this key; converting them rejects each
#: with its reason, so nothing is dropped silently.
UNSORTED = ("", "")


@dataclass(frozen=True)
class SeriesFiles:
    """The files of one series found at a source."""

    study: str
    series: str
    files: tuple[str, ...]


class BatchResult(TypedDict):
    """What one mapped conversion returns (it goes through XCom)."""

    instances: int
    series: list[list[str]]
    rejected: list[dict[str, str]]
    seconds: float


class Summary(TypedDict):
    """What aggregation returns."""

    site: str
    instances: int
    series: int
    rejected: list[dict[str, str]]


def discover_folder(inputs: Iterable[str | Path]) -> list[SeriesFiles]:
    """Group the Part 10 files under ``inputs`` by series, reading only their headers."""
    groups: dict[tuple[str, str], list[str]] = {}
    for path in collect_files(inputs):
        try:
            ds = dcmread(path, stop_before_pixels=True,
                         specific_tags=["StudyInstanceUID", "SeriesInstanceUID"])
            key = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID))
        except (InvalidDicomError, AttributeError, OSError, ValueError, EOFError, KeyError,
                TypeError):
            key = UNSORTED
        groups.setdefault(key, []).append(str(path))
    return [SeriesFiles(study, series, tuple(files))
            for (study, series), files in sorted(groups.items())]


def plan_batches(series: Sequence[SeriesFiles], batch_size: int,
                 max_batches: int = MAX_MAP_LENGTH) -> list[list[str]]:
    """Batches of whole series (file lists) for a mapped task: at most ``max_batches`` of them.

    ``batch_size`` is the number of series per batch; it grows when there are
    more than ``batch_size * max_batches`` series (204,346 NLST series fit in
    1,024 batches of 200).
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    size = max(batch_size, math.ceil(len(series) / max_batches))
    return [[f for s in series[i:i + size] for f in s.files] for i in range(0, len(series), size)]


def convert_batch(files: Sequence[str], store: Store, profile: str = "default",
                  workers: int = 1) -> BatchResult:
    """Convert one batch: its per-instance objects, no indexes.  Idempotent."""
    result = convert_files(files, store, profile=profile, workers=workers)
    log.info("batch: %d instances of %d series written, %d rejected in %.1f s",
             len(result.written), len(result.touched()), len(result.rejected), result.seconds)
    return {"instances": len(result.written),
            "series": [[study, series] for study, series in result.touched()],
            "rejected": [{"path": r.path, "reason": r.reason} for r in result.rejected],
            "seconds": round(result.seconds, 3)}


def aggregate_batches(results: Iterable[BatchResult], store: Store,
                      profile: str = "default") -> Summary:
    """Merge the batches into the site's indexes (one writer), then the report and manifest."""
    started = time.perf_counter()
    results = list(results)
    touched = sorted({(s[0], s[1]) for r in results for s in r["series"]})
    rejected = sorted((x for r in results for x in r["rejected"]), key=lambda x: x["path"])
    instances = sum(r["instances"] for r in results)
    report = {"instances": instances, "series": [f"{a}/{b}" for a, b in touched],
              "rejected": rejected, "skipped": []}
    aggregate(store, touched, get_profile(profile), report=report)
    log.info("aggregated %d series in %.1f s", len(touched), time.perf_counter() - started)
    return {"site": store.url, "instances": instances, "series": len(touched), "rejected": rejected}
