"""The pipeline steps without Airflow: discovery, batch planning at NLST scale, download, conversion."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from static_dicomweb import pipeline
from static_dicomweb.sources import SeriesRef
from static_dicomweb.sources.folder import UNSORTED
from static_dicomweb.store import LocalStore
from static_dicomweb.validate import validate

from .conftest import sample_files


def test_discover_groups_files_by_series(sample_dir: Path) -> None:
    found = pipeline.discover(str(sample_dir), skip_localizer_series=False)
    assert sum(r.instances for r in found) == len(sample_files(sample_dir))
    assert len({r.series_uid for r in found}) == len(found)
    assert UNSORTED not in {r.series_uid for r in found}
    assert len(pipeline.discover(str(sample_dir))) < len(found)  # localizers left out
    assert len(pipeline.discover(str(sample_dir), limit=2)) == 2
    one = found[0].series_uid
    assert [r.series_uid for r in pipeline.discover(str(sample_dir), series_uids=[one],
                                                    skip_localizer_series=False)] == [one]


def test_scheduled_window_takes_what_changed(sample_dir: Path, tmp_path: Path) -> None:
    import shutil

    src = tmp_path / "src"
    shutil.copytree(sample_dir, src)
    old = time.time() - 30 * 86400
    for f in src.rglob("*.dcm"):
        os.utime(f, (old, old))
    changed = sorted(src.rglob("*.dcm"))[-1]
    changed.touch()
    now = datetime.now(UTC)
    window = pipeline.discover(str(src), since=now - timedelta(days=7), until=now + timedelta(minutes=1),
                               skip_localizer_series=False)
    assert len(window) == 1 and str(changed) in window[0].location.split("\n")
    assert pipeline.discover(str(src), since=now - timedelta(days=60), until=now - timedelta(days=40)) == []


def test_unreadable_files_are_kept_for_conversion_to_reject(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "junk.dcm").write_bytes(b"junk")
    found = pipeline.discover(str(tmp_path / "in"), skip_localizer_series=False)
    assert [r.series_uid for r in found] == [UNSORTED]
    (batch,) = pipeline.plan_batches(found, batch_size=5)
    files = pipeline.download_batch(str(tmp_path / "in"), batch, tmp_path / "dl")
    result = pipeline.convert_batch(files, LocalStore(tmp_path / "site"))
    assert result["instances"] == 0
    assert result["rejected"][0]["path"].endswith("junk.dcm")


def test_batches_stay_within_airflows_map_limit() -> None:
    nlst = [SeriesRef(str(i), instances=100) for i in range(204_346)]
    batches = pipeline.plan_batches(nlst, batch_size=50)
    assert len(batches) <= pipeline.MAX_MAP_LENGTH
    assert sum(len(b) for b in batches) == len(nlst)
    assert len(pipeline.plan_batches(nlst[:120], batch_size=50)) == 3
    with pytest.raises(ValueError):
        pipeline.plan_batches(nlst, batch_size=0)


def test_batches_then_one_aggregation_make_a_valid_site(sample_dir: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "site")
    batches = pipeline.plan_batches(pipeline.discover(str(sample_dir), skip_localizer_series=False), 2)
    results = [pipeline.convert_batch(pipeline.download_batch(str(sample_dir), b, tmp_path), store)
               for b in batches]
    summary = pipeline.aggregate_batches(results, store)
    assert summary["instances"] == len(sample_files(sample_dir))
    assert summary["rejected"] == []
    assert validate(str(tmp_path / "site"), keep=False).ok
