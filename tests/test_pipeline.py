"""The pipeline steps without Airflow: discovery, batch planning at NLST scale, batch conversion."""

from __future__ import annotations

from pathlib import Path

import pytest

from static_dicomweb import pipeline
from static_dicomweb.store import LocalStore
from static_dicomweb.validate import validate

from .conftest import sample_files


def test_discover_groups_files_by_series(sample_dir: Path) -> None:
    found = pipeline.discover_folder([sample_dir])
    assert sum(len(s.files) for s in found) == len(sample_files(sample_dir))
    assert len({(s.study, s.series) for s in found}) == len(found)
    assert pipeline.UNSORTED not in {(s.study, s.series) for s in found}


def test_unreadable_files_are_kept_for_conversion_to_reject(sample_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "junk.dcm").write_bytes(b"junk")
    found = pipeline.discover_folder([tmp_path])
    assert [(s.study, s.series) for s in found] == [pipeline.UNSORTED]
    result = pipeline.convert_batch(list(found[0].files), LocalStore(tmp_path / "site"))
    assert result["instances"] == 0
    assert result["rejected"][0]["path"].endswith("junk.dcm")


def test_batches_stay_within_airflows_map_limit() -> None:
    nlst = [pipeline.SeriesFiles("1", str(i), (f"{i}.dcm",)) for i in range(204_346)]
    batches = pipeline.plan_batches(nlst, batch_size=50)
    assert len(batches) <= pipeline.MAX_MAP_LENGTH
    assert sum(len(b) for b in batches) == len(nlst)
    assert len(pipeline.plan_batches(nlst[:120], batch_size=50)) == 3
    with pytest.raises(ValueError):
        pipeline.plan_batches(nlst, batch_size=0)


def test_batches_then_one_aggregation_make_a_valid_site(sample_dir: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "site")
    batches = pipeline.plan_batches(pipeline.discover_folder([sample_dir]), batch_size=2)
    results = [pipeline.convert_batch(files, store) for files in batches]
    summary = pipeline.aggregate_batches(results, store)
    assert summary["instances"] == len(sample_files(sample_dir))
    assert summary["rejected"] == []
    assert validate(str(tmp_path / "site"), keep=False).ok
