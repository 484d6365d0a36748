"""Tests for writes run in child processes (static_dicomweb.offload, writer.Writer)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from static_dicomweb import answers, keys
from static_dicomweb.aggregate import _put_json, aggregate_roots
from static_dicomweb.errors import KeyNotFoundError, RejectedInstanceError, StoreError
from static_dicomweb.offload import ChildWriter, _portable
from static_dicomweb.qido import study_row
from static_dicomweb.store import LocalStore, Slice
from static_dicomweb.writer import OFFLOAD_AFTER, Writer

from .test_queries import _series_rows, _tree


def _build(store: LocalStore, offload: bool) -> None:
    updated = []
    with Writer(store, 1, offload=offload) as writer:
        for s in range(40):
            study = f"1.2.{s}"
            rows = _series_rows(study, 1 + s % 5 + (120 if s == 3 else 0), patients=7)
            writer.submit(_put_json, store, keys.study_series(study), rows)
            updated.append((study, study_row(rows), rows))
        aggregate_roots(store, updated, writer=writer)


@pytest.mark.parametrize("large", [10_000, 50])
def test_child_processes_write_what_this_process_writes(tmp_path: Path, large: int,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # with 50, the roots' answers and pages are written in this process, the rest in children
    monkeypatch.setattr(answers, "LARGE_GROUP", large)
    inline, offloaded = LocalStore(tmp_path / "inline"), LocalStore(tmp_path / "offloaded")
    _build(inline, offload=False)
    _build(offloaded, offload=True)
    tree = _tree(offloaded.root)
    assert tree == _tree(inline.root)
    assert len(tree) > 200  # study indexes, both roots, answers by UID, patient and modality, pages
    assert not [p for p in offloaded.root.rglob(".*.tmp")]


def test_a_small_merge_starts_no_process_and_a_large_one_does(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "site")
    with Writer(store) as writer:
        for n in range(OFFLOAD_AFTER):
            writer.submit(_put_json, store, keys.study_series(f"1.2.{n}"), [])
        assert writer._child is None
        writer.submit(_put_json, store, keys.study_series("1.3"), [])
        assert writer._child is not None
        writer.wait()
        assert store.get(keys.study_series("1.3").key)  # stored once wait returns
        assert store.headers(keys.study_series("1.2.0").key) is not None


def test_first_error_is_raised_at_wait_and_what_followed_it_skipped(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "site")
    writer = ChildWriter(store, processes=1)
    try:
        writer.submit(LocalStore.put, store, keys.study_series("1.1"), [b"\x1f\x8bok"])
        writer.submit(LocalStore.put, store, keys.study_series("1.2"), [Slice("studies/9")])
        writer.submit(LocalStore.put, store, keys.study_series("1.3"), [b"\x1f\x8bafter"])
        with pytest.raises(KeyNotFoundError, match="studies/9"):
            writer.wait()
        assert store.get(keys.study_series("1.1").key) == b"\x1f\x8bok"
        assert store.headers(keys.study_series("1.2").key) is None
        assert store.headers(keys.study_series("1.3").key) is None  # it may name what failed
        writer.submit(LocalStore.put, store, keys.study_series("1.4"), [b"\x1f\x8bnext"])
        writer.wait()  # the error was reported once; later writes run
        assert store.get(keys.study_series("1.4").key) == b"\x1f\x8bnext"
    finally:
        writer.abandon()


def test_an_error_that_does_not_pickle_arrives_as_a_store_error() -> None:
    error = pickle.loads(_portable(RejectedInstanceError("a.dcm", "not DICOM")))
    assert isinstance(error, StoreError)
    assert "RejectedInstanceError: a.dcm: not DICOM" in str(error)
    assert isinstance(pickle.loads(_portable(KeyNotFoundError("k"))), KeyNotFoundError)


def test_a_child_that_dies_is_an_error_naming_it(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "site")
    writer = ChildWriter(store, processes=2)
    try:
        for child in writer._children:
            child.process.kill()
            child.process.wait()
        writer.submit(_put_json, store, keys.study_series("1.1"), [])
        with pytest.raises(StoreError, match=r"writer process .* ended"):
            writer.wait()
    finally:
        writer.abandon()
