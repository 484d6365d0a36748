"""Tests for the local-folder store (static_dicomweb.store.LocalStore)."""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import time
from pathlib import Path

import pytest

from static_dicomweb import keys
from static_dicomweb.errors import KeyNotFoundError, StoreError
from static_dicomweb.keys import ObjectSpec
from static_dicomweb.store import MAPPING_FILE, LocalStore, Slice, open_store

from .conftest import run_to_the_end

FORK = multiprocessing.get_context("fork")


def spec(key: str, content_type: str = "application/octet-stream",
         encoding: str | None = None) -> ObjectSpec:
    return ObjectSpec(key, content_type, encoding, keys.INDEX)


def body(key: str, payload: bytes) -> list[bytes]:
    """``payload`` as the object of ``key`` would hold it (multipart keys get a part around it)."""
    if not keys.needs_head(key):
        return [payload]
    boundary = keys.boundary_for(key)
    return [f"--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n".encode(), payload,
            f"\r\n--{boundary}--\r\n".encode()]


def put(store: LocalStore, key: str, payload: bytes) -> None:
    """Write ``payload`` at ``key`` with the headers the key gives."""
    pieces = body(key, payload)
    store.put(derived(key, pieces[0]), pieces)


def derived(key: str, head: bytes = b"") -> ObjectSpec:
    headers = keys.headers_for(key, head)
    return ObjectSpec(key, headers["Content-Type"], headers.get("Content-Encoding"),
                      headers["Cache-Control"])


def stored(store: LocalStore, key: str) -> bytes:
    """The payload ``put`` wrote (the part's bytes for a multipart key)."""
    data = store.get(key)
    if not keys.needs_head(key):
        return data
    return data[len(body(key, b"")[0]): len(data) - len(body(key, b"")[2])]


def all_files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "site")


# -- put / get / headers ---------------------------------------------------

def test_put_get_headers_round_trip(store: LocalStore) -> None:
    s = keys.study_metadata("1.2.3")
    store.put(s, [b"\x1f\x8b gzip bytes as stored"])
    assert store.get(s.key) == b"\x1f\x8b gzip bytes as stored"
    assert store.headers(s.key) == {"Content-Type": "application/dicom+json",
                                    "Content-Encoding": "gzip", "Cache-Control": keys.INDEX}


def test_put_with_user_metadata(store: LocalStore) -> None:
    store.put(spec("a/b"), [b"x"], meta={"sha256": "abc"})
    headers = store.headers("a/b")
    assert headers is not None
    assert headers["x-amz-meta-sha256"] == "abc"
    assert headers["Content-Type"] == "application/octet-stream"


def test_put_overwrites_body_and_user_metadata(store: LocalStore) -> None:
    store.put(spec("a.json", "application/json"), [b"one"], meta={"rows": "1"})
    store.put(spec("a.json", "application/json"), [b"two!"])
    assert store.get("a.json") == b"two!"
    assert store.headers("a.json") == {"Content-Type": "application/json", "Cache-Control": keys.INDEX}


def test_headers_that_do_not_follow_from_key_and_bytes_are_refused(store: LocalStore) -> None:
    with pytest.raises(StoreError, match="do not follow"):
        store.put(spec("a", "image/jpeg"), [b"two!"])
    with pytest.raises(StoreError, match="headers lost"):
        store.put(keys.series("1.2", "3.4"), [b"not a multipart body"])
    assert list(store.walk()) == []


def test_every_spec_of_the_key_module_is_derivable() -> None:
    from static_dicomweb import multipart

    frame = keys.frame("1.2", "3.4", "5.6", 2, "image/jp2", "1.2.840.10008.1.2.4.90")
    part = "image/jp2; transfer-syntax=1.2.840.10008.1.2.4.90"
    cases = [(frame, multipart.single(frame, part, b"j2k")[0])]
    for p10 in (keys.instance("1.2", "3.4", "5.6"), keys.series("1.2", "3.4")):
        cases.append((p10, multipart.single(p10, "application/dicom", b"DICM")[0]))
    bulk = keys.bulkdata("1.2", "3.4", "5.6", "00091002")
    cases.append((bulk, multipart.single(bulk, "application/octet-stream", b"x")[0]))
    for json_spec in (keys.studies(), keys.all_series(), keys.study_series("1.2"),
                      keys.study_instances("1.2"), keys.series_instances("1.2", "3.4"),
                      keys.study_metadata("1.2"), keys.series_metadata("1.2", "3.4"),
                      keys.instance_metadata("1.2", "3.4", "5.6"), keys.series_record("1.2", "3.4"),
                      keys.root_record("studies")):
        cases.append((json_spec, b"\x1f\x8b"))
    for plain in (keys.manifest(), keys.conversion_report(), keys.validation_report(),
                  keys.study_thumbnail("1.2"), keys.series_thumbnail("1.2", "3.4"),
                  keys.instance_thumbnail("1.2", "3.4", "5.6")):
        cases.append((plain, b"\xff\xd8"))
    for one, head in cases:
        assert keys.headers_for(one.key, head) == one.headers(), one.key


def test_empty_object(store: LocalStore) -> None:
    store.put(spec("empty"), [])
    assert store.get("empty") == b""
    assert store.headers("empty") is not None


def test_root_created_on_first_write(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "site")
    assert not (tmp_path / "site").exists()
    store.put(spec("k"), [b"v"])
    assert store.get("k") == b"v"


def test_root_with_missing_parents_created_on_first_write(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "a" / "b" / "site")
    store.put(spec("k"), [b"v"])
    assert store.get("k") == b"v"


def test_file_key_and_deeper_key_coexist(store: LocalStore) -> None:
    series = keys.series("1", "2")
    metadata = keys.series_metadata("1", "2")
    assert series.key == "studies/1/series/2"
    put(store, series.key, b"series body")
    store.put(metadata, [b"\x1f\x8bmetadata body"])
    put(store, "studies/1/series/2/instances/3", b"instance body")
    assert stored(store, "studies/1/series/2") == b"series body"
    assert store.get("studies/1/series/2/metadata") == b"\x1f\x8bmetadata body"
    assert stored(store, "studies/1/series/2/instances/3") == b"instance body"
    assert store.headers(series.key)["Content-Type"] == (  # type: ignore[index]
        f'multipart/related; type="application/octet-stream"; boundary={keys.boundary_for(series.key)}')
    assert store.headers(metadata.key) == metadata.headers()


def test_put_from_bytes_path_and_slice(store: LocalStore, tmp_path: Path) -> None:
    local = tmp_path / "local.bin"
    local.write_bytes(b"FILE" * 1000)
    store.put(spec("source"), [b"HEAD|", b"payload-bytes", b"|TAIL"])
    store.put(spec("mixed"), [b"<", local, b">", Slice("source", 5, 5), Slice("source"), b""])
    expected = b"<" + b"FILE" * 1000 + b">" + b"payload-bytes" + b"HEAD|payload-bytes|TAIL"
    assert store.get("mixed") == expected


def test_slice_of_a_large_object(store: LocalStore) -> None:
    big = os.urandom(3 * 1024 * 1024 + 7)
    store.put(spec("big"), [big])
    store.put(spec("part"), [Slice("big", 1000, 2000)])
    assert store.get("part") == big[1000:len(big) - 2000]


def test_slice_of_missing_key_raises(store: LocalStore) -> None:
    with pytest.raises(KeyNotFoundError, match="missing"):
        store.put(spec("x"), [Slice("missing")])
    assert store.headers("x") is None


def test_no_temporary_files_left(store: LocalStore) -> None:
    store.put(spec("a/b"), [b"1"])
    store.put(spec("a/b"), [b"2"])
    store.put(spec("a/c"), [Slice("a/b")])
    hidden = [p for p in store.root.rglob(".*") if p.name not in (".lock", MAPPING_FILE)]
    assert hidden == []


def test_interrupted_write_leaves_only_a_hidden_temporary_file(store: LocalStore) -> None:
    store.put(spec("a/b"), [b"complete"])
    # a write goes to a hidden temporary file renamed into place: one killed midway leaves that
    (store.root / "a" / ".c.body.999.0.tmp").write_bytes(b"half of")
    assert store.headers("a/c") is None
    assert list(store.walk()) == ["a/b"]
    assert store.children("a/") == ["b"]
    store.put(spec("a/c"), [b"whole"])
    assert store.get("a/c") == b"whole"


def test_failed_write_leaves_nothing(store: LocalStore) -> None:
    with pytest.raises(KeyNotFoundError):
        store.put(spec("a/b"), [b"start", Slice("missing")])
    assert not store.path("a/b").exists()
    assert store.headers("a/b") is None
    assert [p.name for p in (store.root / "a").iterdir()] == []


def test_create_only_put(store: LocalStore) -> None:
    from static_dicomweb.errors import ObjectExistsError

    store.put(spec("_site/x.json", "application/json"), [b"first"], if_absent=True)
    with pytest.raises(ObjectExistsError, match=r"_site/x\.json"):
        store.put(spec("_site/x.json", "application/json"), [b"second"], if_absent=True)
    assert store.get("_site/x.json") == b"first"
    assert [p.name for p in (store.root / "_site").iterdir()] == ["x.json.body"]


def _claim(root: str, name: str, out: str, go: float) -> None:
    from static_dicomweb.errors import ObjectExistsError

    while time.time() < go:
        pass
    try:
        LocalStore(root).put(spec("_site/claim.json", "application/json"), [name.encode()], if_absent=True)
        Path(out).write_text("won")
    except ObjectExistsError:
        Path(out).write_text("lost")


def test_create_only_put_has_one_winner_among_processes(store: LocalStore, tmp_path: Path) -> None:
    go = time.time() + 0.5  # all start together
    procs = [FORK.Process(target=_claim, args=(str(store.root), f"w{n}", str(tmp_path / f"o{n}"), go))
             for n in range(6)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(30)
    outcomes = [(tmp_path / f"o{n}").read_text() for n in range(6)]
    assert sorted(outcomes) == ["lost"] * 5 + ["won"]
    assert store.get("_site/claim.json") == f"w{outcomes.index('won')}".encode()


# -- missing keys ------------------------------------------------------------

def test_get_missing_raises_key_not_found(store: LocalStore) -> None:
    with pytest.raises(KeyNotFoundError, match="studies/9"):
        store.get("studies/9")
    put(store, "studies/1", b"x")
    with pytest.raises(KeyNotFoundError):
        store.get("studies/1/series")  # under a file key's name, no folder
    with pytest.raises(KeyNotFoundError):
        store.get("studies")


def test_headers_missing_is_none(store: LocalStore) -> None:
    assert store.headers("nothing/here") is None
    put(store, "studies/1/series/2/metadata", b"x")
    assert store.headers("studies/1/series/2") is None  # a folder, not an object
    assert store.headers("studies") is None


# -- keys that would leave the root ------------------------------------------

BAD_KEYS = ["", "..", "../x", "a/../../x", "a/..", "/etc/passwd", "/x", "a//b", "a/", "./a", "a/./b",
            "a\\..\\..\\x"]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_raise_and_write_nothing(tmp_path: Path, key: str) -> None:
    root = tmp_path / "deep" / "site"
    root.mkdir(parents=True)
    store = LocalStore(root)
    before = all_files(tmp_path)
    with pytest.raises(StoreError):
        put(store, key, b"evil")
    with pytest.raises(StoreError):
        store.get(key)
    with pytest.raises(StoreError):
        store.headers(key)
    with pytest.raises(StoreError):
        store.path(key)
    assert all_files(tmp_path) == before


@pytest.mark.parametrize("method", ["get", "headers"])
def test_nul_in_key_raises_store_error(store: LocalStore, method: str) -> None:
    store.put(spec("a"), [b"x"])
    with pytest.raises(StoreError):
        getattr(store, method)("a\x00b")


def test_bad_slice_key_raises(store: LocalStore, tmp_path: Path) -> None:
    (tmp_path / "secret.body").write_bytes(b"outside")
    with pytest.raises(StoreError):
        store.put(spec("copy"), [Slice("../secret")])
    with pytest.raises(KeyNotFoundError):
        store.get("copy")


def test_path_is_inside_root(store: LocalStore) -> None:
    path = store.path("studies/1.2/series/3.4")
    assert path == store.root / "studies" / "1.2" / "series" / "3.4.body"
    assert path.resolve().is_relative_to(store.root)


# -- listing ---------------------------------------------------------------

def test_children_lists_immediate_names(store: LocalStore) -> None:
    put(store, "studies/1/series/2", b"s")
    put(store, "studies/1/series/2/metadata", b"m")
    put(store, "studies/1/series/3/instances/4", b"i")
    put(store, "studies/1/series", b"q")
    series_folder = store.root / "studies" / "1" / "series"
    (series_folder / ".2.body.999.0.tmp").write_bytes(b"half written")
    (series_folder / "5.head.json").write_bytes(b"{}")
    assert store.children("studies/1/series/") == ["2", "3"]
    assert store.children("studies/1/series") == ["2", "3"]
    assert store.children("studies/1/") == ["series"]
    assert store.children("studies/") == ["1"]
    assert store.children("") == ["studies"]
    assert store.children("studies/1/series/2/") == ["metadata"]


def test_children_with_uid_folder_names(store: LocalStore) -> None:
    store.put(keys.series_metadata("1.2.3", "4.5"), [b"\x1f\x8b"], meta={"rows": "1"})
    assert store.children("studies/") == ["1.2.3"]
    assert store.children("studies/1.2.3/series/") == ["4.5"]
    assert store.children("studies/1.2.3/series/4.5/") == ["metadata"]


def test_children_of_missing_or_file_prefix_is_empty(store: LocalStore) -> None:
    assert store.children("nothing/") == []
    put(store, "studies/1", b"x")
    assert store.children("studies/1/") == []


def test_keys_walks_everything(store: LocalStore) -> None:
    written = ["studies", "studies/1/series/2", "studies/1/series/2/metadata",
               "studies/1/series/2/instances/3/frames/1", "_site/manifest.json"]
    for key in written:
        put(store, key, key.encode())
    with store.lock():
        pass
    (store.root / "studies" / ".hidden.body").write_bytes(b"")
    found = list(store.walk())
    assert sorted(found) == sorted(written)
    assert len(found) == len(set(found))
    assert sorted(store.walk("studies/1/series/2")) == [
        "studies/1/series/2/instances/3/frames/1", "studies/1/series/2/metadata"]
    for key in found:
        assert stored(store, key) == key.encode()


def test_keys_of_empty_store(store: LocalStore) -> None:
    assert list(store.walk()) == []


# -- lock ------------------------------------------------------------------

def _take_lock_then_touch(root: str, marker: str) -> None:
    with LocalStore(root).lock():
        Path(marker).write_text(str(time.monotonic()))


def _append_under_lock(root: str, log: str, name: str, rounds: int) -> None:
    store = LocalStore(root)
    for _ in range(rounds):
        with store.lock(), open(log, "a") as fh:
            fh.write(f"{name} start\n")
            fh.flush()
            time.sleep(0.003)
            fh.write(f"{name} end\n")


def test_lock_blocks_another_process(store: LocalStore, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    with store.lock():
        child = FORK.Process(target=_take_lock_then_touch, args=(str(store.root), str(marker)))
        child.start()
        time.sleep(0.3)
        assert child.is_alive()
        assert not marker.exists()
        released = time.monotonic()
    child.join(10)
    assert child.exitcode == 0
    assert float(marker.read_text()) >= released


def test_lock_serialises_two_processes(store: LocalStore, tmp_path: Path) -> None:
    log = tmp_path / "log"
    workers = [FORK.Process(target=_append_under_lock, args=(str(store.root), str(log), name, 15))
               for name in ("a", "b")]
    run_to_the_end(workers, 20)
    lines = log.read_text().splitlines()
    assert len(lines) == 60
    for start, end in zip(lines[::2], lines[1::2], strict=True):
        name = start.split()[0]
        assert (start, end) == (f"{name} start", f"{name} end")


def test_lock_is_released_on_error(store: LocalStore, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), store.lock():
        raise RuntimeError("boom")
    marker = tmp_path / "marker"
    child = FORK.Process(target=_take_lock_then_touch, args=(str(store.root), str(marker)))
    child.start()
    child.join(10)
    assert child.exitcode == 0 and marker.exists()


def test_lock_file_is_not_a_key(store: LocalStore) -> None:
    with store.lock():
        pass
    assert (store.root / "_site" / ".lock").exists()
    assert list(store.walk()) == []
    assert store.children("_site/") == []


# -- misc ------------------------------------------------------------------

def test_store_pickles_to_same_root(store: LocalStore) -> None:
    store.put(spec("k"), [b"v"])
    copy = pickle.loads(pickle.dumps(store))
    assert isinstance(copy, LocalStore)
    assert copy.root == store.root
    assert copy.get("k") == b"v"


def test_open_store(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "x"))
    assert isinstance(store, LocalStore)
    assert store.url == str((tmp_path / "x").resolve())
    s3 = open_store("s3://bucket/prefix/", endpoint_url="http://127.0.0.1:9")
    assert (s3.url, type(s3).__name__) == ("s3://bucket/prefix", "S3Store")
    with pytest.raises(StoreError, match="no bucket"):
        open_store("s3:///prefix")


# -- the key-to-file mapping -----------------------------------------------------------

def test_keys_deeper_than_six_segments_are_files_in_the_fifth_folder(store: LocalStore) -> None:
    base = "studies/1/series/2/instances"
    written = [f"{base}/3", f"{base}/3/metadata", f"{base}/3/frames/1", f"{base}/3/frames/2",
               f"{base}/3/bulkdata/00091002.0.00100010", f"{base}/4/frames/1"]
    for key in written:
        put(store, key, key.encode())
    _check_files_of_the_fifth_folder(store, base)
    for key in written:
        assert stored(store, key) == key.encode()
        assert store.headers(key) == derived(key, body(key, b"")[0]).headers()
    _check_listings(store, base, written)
    store.delete(f"{base}/3/frames/2")
    assert store.headers(f"{base}/3/frames/2") is None
    assert store.children(f"{base}/3/frames/") == ["1"]


def _check_files_of_the_fifth_folder(store: LocalStore, base: str) -> None:
    """The keys under ``base`` are files named with ``+`` for each further ``/``, in ``base``'s folder."""
    folder = store.root / base
    assert sorted(p.name for p in folder.iterdir()) == [
        "3+bulkdata+00091002.0.00100010.body", "3+frames+1.body", "3+frames+2.body",
        "3+metadata.body", "3.body", "4+frames+1.body"]
    assert store.path(f"{base}/3/frames/2") == folder / "3+frames+2.body"
    assert store.path(f"{base}/3") == folder / "3.body"


def _check_listings(store: LocalStore, base: str, written: list[str]) -> None:
    """walk() and children() list the keys as if each ``/`` were a folder."""
    assert sorted(store.walk()) == sorted(written)
    assert sorted(store.walk(f"{base}/3")) == sorted(k for k in written if k.startswith(f"{base}/3/"))
    assert list(store.walk(f"{base}/3/frames/")) == [f"{base}/3/frames/1", f"{base}/3/frames/2"]
    assert store.children(f"{base}/") == ["3", "4"]
    assert store.children(f"{base}/3/") == ["bulkdata", "frames", "metadata"]
    assert store.children(f"{base}/3/frames") == ["1", "2"]
    assert store.children(f"{base}/3/frames/1/") == []
    assert store.children(f"{base}/5/") == []


def test_keys_with_the_join_character_are_refused(store: LocalStore) -> None:
    for key in ("studies/1/series/2/instances/3+frames+1", "a+b"):
        with pytest.raises(StoreError, match=r"'\+'"):
            put(store, key, b"x")
        with pytest.raises(StoreError):
            store.headers(key)
    assert not store.root.exists()


def test_new_site_records_its_mapping_first(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "site")
    assert not store.exists()
    assert store.headers("studies") is None
    assert not (tmp_path / "site").exists()  # reading creates nothing
    put(store, "studies/1/series/2/instances/3/frames/1", b"f")
    assert json.loads((store.root / MAPPING_FILE).read_bytes()) == {"mapping": 3}
    assert list(store.walk()) == ["studies/1/series/2/instances/3/frames/1"]
    assert store.children("") == ["studies"]


def test_unknown_mapping_is_refused(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / MAPPING_FILE).write_text('{"mapping": 9}')
    with pytest.raises(StoreError, match="mapping 9"):
        open_store(str(tmp_path / "site"))
    (tmp_path / "site" / MAPPING_FILE).write_text("garbage")
    with pytest.raises(StoreError, match="not a mapping record"):
        open_store(str(tmp_path / "site"))


def _put_many(root: str, name: str) -> None:
    store = LocalStore(root)
    for i in range(30):
        put(store, f"studies/1/series/2/instances/{name}.{i}/frames/1", b"x")


def test_two_writers_of_a_new_site_agree_on_its_mapping(tmp_path: Path) -> None:
    root = tmp_path / "site"
    workers = [FORK.Process(target=_put_many, args=(str(root), name)) for name in ("5", "6")]
    run_to_the_end(workers, 20)
    store = LocalStore(root)
    assert json.loads((root / MAPPING_FILE).read_bytes()) == {"mapping": 3}
    assert len(list(store.walk())) == 60
    assert store.children("studies/1/series/2/instances/") == sorted(
        f"{name}.{i}" for name in ("5", "6") for i in range(30))
