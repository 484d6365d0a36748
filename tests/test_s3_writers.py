"""Two writers on one S3 prefix lose nothing: the writers' lock (S3 conditional writes), forced races.

How the interleaving is forced: writer A takes the lock (or, for aggregation, has read the root
indexes under it) and then waits until writer B has written a marker file saying it is about to take
the lock itself, plus a pause; only then does A write. Without a working lock, B reads the same old
state in that pause and one of the two updates is lost, every time.
"""

from __future__ import annotations

import multiprocessing
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest

from static_dicomweb import keys
from static_dicomweb.errors import ObjectExistsError, StoreError
from static_dicomweb.s3store import LOCK_KEY, S3Store

from .conftest import run_to_the_end, sample_files
from .test_s3 import moto_endpoint  # noqa: F401  (the moto server fixture)

pytestmark = pytest.mark.integration
FORK = multiprocessing.get_context("fork")
PAUSE = 1.5


@pytest.fixture(scope="module", autouse=True)
def writers_bucket(moto_endpoint: str) -> str:  # noqa: F811
    S3Store("s3://writers", endpoint_url=moto_endpoint).client.create_bucket(Bucket="writers")
    return "writers"


def _wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def _announcing_lock(marker: Path) -> Callable[..., Any]:
    """S3Store.lock, writing ``marker`` just before it tries to take the lock."""
    original = S3Store.lock

    def lock(self: S3Store, *args: Any, **kwargs: Any) -> Any:
        marker.touch()
        return original(self, *args, **kwargs)

    return lock


def _counter_spec() -> keys.ObjectSpec:
    return keys.ObjectSpec("_site/test/counter.json", "application/json", cache_control=keys.INDEX)


def _increment(url: str, endpoint: str, me: str, other: str, flags: Path) -> None:
    store = S3Store(url, endpoint_url=endpoint)
    if me == "b":
        _wait_for(flags / "a-holds")
        S3Store.lock = _announcing_lock(flags / "b-trying")  # type: ignore[method-assign]
    with store.lock():
        value = int(store.get(_counter_spec().key))
        if me == "a":
            (flags / "a-holds").touch()
            _wait_for(flags / "b-trying")
            time.sleep(PAUSE)  # B is now trying to take the lock
        store.put(_counter_spec(), [str(value + 1).encode()])


def test_lock_serialises_read_modify_write_of_two_processes(moto_endpoint: str,  # noqa: F811
                                                            tmp_path: Path) -> None:
    store = S3Store("s3://writers/one", endpoint_url=moto_endpoint)
    store.put(_counter_spec(), [b"0"])
    procs = [FORK.Process(target=_increment, args=(store.url, moto_endpoint, me, other, tmp_path))
             for me, other in (("a", "b"), ("b", "a"))]
    run_to_the_end(procs, 120)
    assert store.get(_counter_spec().key) == b"2"
    assert store.headers(LOCK_KEY) is None  # released


def test_an_expired_lock_is_taken_over_and_its_old_holder_cannot_release_it(
        moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    import static_dicomweb.s3store as s3store

    store = S3Store("s3://writers/expiry", endpoint_url=moto_endpoint)
    monkeypatch.setattr(s3store, "LOCK_TTL", 0.5)
    stale = store._write_lock(IfNoneMatch="*")  # a writer that was killed while holding it
    time.sleep(0.6)
    with store.lock(timeout=10):
        held = store.get(LOCK_KEY)
        store._release(stale)  # the killed writer's late release changes nothing
        assert store.get(LOCK_KEY) == held
    assert store.headers(LOCK_KEY) is None


def test_a_held_lock_times_out_with_a_clear_error(moto_endpoint: str) -> None:  # noqa: F811
    store = S3Store("s3://writers/held", endpoint_url=moto_endpoint)
    other = S3Store(store.url, endpoint_url=moto_endpoint)
    with store.lock(), pytest.raises(StoreError, match="held by another writer"), other.lock(timeout=1):
        pass


def test_create_only_put_on_s3(moto_endpoint: str) -> None:  # noqa: F811
    store = S3Store("s3://writers/claims", endpoint_url=moto_endpoint)
    spec = keys.ObjectSpec("_site/claim.json", "application/json", cache_control=keys.INDEX)
    store.put(spec, [b"first"], if_absent=True)
    with pytest.raises(ObjectExistsError, match=r"_site/claim\.json"):
        store.put(spec, [b"second"], if_absent=True)
    with pytest.raises(ObjectExistsError):
        store.put(spec, [b"x" * (9 * 1024 * 1024)], if_absent=True)  # a multipart upload too
    assert store.get(spec.key) == b"first"
    assert store.client.list_multipart_uploads(Bucket="writers").get("Uploads", []) == []


def test_a_killed_writers_multipart_upload_is_aborted_by_the_next(moto_endpoint: str) -> None:  # noqa: F811
    store = S3Store("s3://writers/killed", endpoint_url=moto_endpoint)
    store.client.create_multipart_upload(Bucket="writers", Key="killed/studies/1/series/2")
    with store.lock():  # moto dates every upload in 2010: it counts as stale
        pass
    uploads = store.client.list_multipart_uploads(Bucket="writers", Prefix="killed/")
    assert uploads.get("Uploads", []) == []


def _convert_series(url: str, endpoint: str, folder: Path, me: str, flags: Path) -> None:
    import static_dicomweb.roots as roots
    from static_dicomweb.convert import convert

    if me == "a":  # A has read the root indexes, then waits for B to be about to aggregate
        original = roots.root_lines

        def root_lines(store: Any, name: str) -> list[bytes]:
            lines = original(store, name)
            if name == "series":
                _wait_for(flags / "b-trying")
                time.sleep(PAUSE)
            return lines

        roots.root_lines = root_lines  # type: ignore[assignment]
    else:
        _wait_for(flags / "a-converted")
        S3Store.lock = _announcing_lock(flags / "b-trying")  # type: ignore[method-assign]
    original_lock = S3Store.lock

    def lock(self: S3Store, *args: Any, **kwargs: Any) -> Any:
        if me == "a":
            (flags / "a-converted").touch()
        return original_lock(self, *args, **kwargs)

    S3Store.lock = lock  # type: ignore[method-assign]
    result = convert([folder], S3Store(url, endpoint_url=endpoint))
    assert result.ok, result.rejected


def test_two_converters_into_one_prefix_lose_no_series(moto_endpoint: str, sample_dir: Path,  # noqa: F811
                                                       tmp_path: Path) -> None:
    by_series: dict[str, list[Path]] = {}
    for path in sample_files(sample_dir):
        by_series.setdefault(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID,
                             []).append(path)
    chosen = sorted(by_series)[:2]
    for name, series in zip(("a", "b"), chosen, strict=True):
        (tmp_path / name).mkdir()
        for path in by_series[series]:
            shutil.copy(path, tmp_path / name / path.name)
    store = S3Store("s3://writers/race", endpoint_url=moto_endpoint)
    procs = [FORK.Process(target=_convert_series,
                          args=(store.url, moto_endpoint, tmp_path / name, name, tmp_path))
             for name in ("a", "b")]
    run_to_the_end(procs, 300)
    import gzip
    import json

    rows = json.loads(gzip.decompress(store.get("series")))
    assert sorted(r["0020000E"]["Value"][0] for r in rows) == chosen
    manifest = json.loads(store.get(keys.manifest().key))
    assert manifest["counts"]["series"] == 2
