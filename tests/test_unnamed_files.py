"""The local store's two ways of writing a file whole: an unnamed file linked into place, or a
hidden temporary file renamed, where the file system has no unnamed files."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from static_dicomweb import keys
from static_dicomweb.errors import ObjectExistsError
from static_dicomweb.store import LocalStore

SPEC = keys.study_series("1.2.3")


def _json(text: str) -> bytes:
    return gzip.compress(text.encode(), mtime=0)


def _store(root: Path, unnamed: bool) -> LocalStore:
    store = LocalStore(root)
    if not unnamed:
        store._unnamed_files = False  # as on a file system without O_TMPFILE
    return store


def _every_file(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("unnamed", [True, False], ids=["unnamed", "named"])
def test_writes_replace_and_refuse_the_same_way(tmp_path: Path, unnamed: bool) -> None:
    store = _store(tmp_path / "site", unnamed)
    store.put(SPEC, [_json("[1]")])
    store.put(SPEC, [_json("[2]")], meta={"sha256": "ab"})
    assert store.get(SPEC.key) == _json("[2]")
    assert (store.headers(SPEC.key) or {}).get("x-amz-meta-sha256") == "ab"
    with pytest.raises(ObjectExistsError, match="already in"):
        store.put(SPEC, [_json("[3]")], if_absent=True)
    assert store.get(SPEC.key) == _json("[2]")
    record = keys.instance_record("1.2.3.4")
    store.put(record, [b"{}"], if_absent=True)
    # nothing but the objects, their user metadata and the mapping record: no temporary names
    assert _every_file(tmp_path / "site") == sorted([
        ".static-dicomweb-store", store.path(record.key).relative_to(tmp_path / "site").as_posix(),
        "studies/1.2.3/series.body", "studies/1.2.3/series.meta"])
    assert (store._unnamed_files is not False) == unnamed


@pytest.mark.parametrize("unnamed", [True, False], ids=["unnamed", "named"])
def test_a_write_that_fails_midway_leaves_the_old_object_and_no_file(tmp_path: Path,
                                                                     unnamed: bool) -> None:
    store = _store(tmp_path / "site", unnamed)
    store.put(SPEC, [_json("[1]")])
    before = _every_file(tmp_path / "site")
    with pytest.raises(FileNotFoundError):
        store.put(SPEC, [_json("[1]"), tmp_path / "gone"])  # a piece that cannot be read
    assert store.get(SPEC.key) == _json("[1]")
    assert _every_file(tmp_path / "site") == before


def test_unnamed_files_are_used_where_the_file_system_has_them(tmp_path: Path) -> None:
    if not hasattr(os, "O_TMPFILE"):
        pytest.skip("no O_TMPFILE on this platform")
    store = LocalStore(tmp_path / "site")
    store.put(SPEC, [_json("[1]")])
    assert store._unnamed_files is True
    assert store.path(SPEC.key).stat().st_nlink == 1
