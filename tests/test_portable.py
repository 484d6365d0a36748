"""A site folder survives the ways people copy folders: cp -r, tar, zip, rsync, a file system without
extended attributes. Each copy is served and read back strictly through dicomweb-client, and answers
every key byte for byte and header for header as the original does."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from static_dicomweb.serve import serve_in_thread
from static_dicomweb.store import LocalStore, open_store
from static_dicomweb.validate import validate

from .test_clients import check_site_round_trip
from .test_s3 import assert_answers_alike

pytestmark = pytest.mark.integration
COMPARED = ("Content-Type", "Content-Encoding", "Cache-Control", "Content-Length")


def _cp_r(site: Path, out: Path) -> None:
    subprocess.run(["cp", "-r", str(site), str(out)], check=True)


def _tar(site: Path, out: Path) -> None:
    archive = out.with_suffix(".tar")
    subprocess.run(["tar", "-cf", str(archive), "-C", str(site.parent), site.name], check=True)
    out.mkdir()
    subprocess.run(["tar", "-xf", str(archive), "-C", str(out), "--strip-components=1"], check=True)


def _zip(site: Path, out: Path) -> None:
    archive = out.with_suffix(".zip")
    subprocess.run(["zip", "-qr", str(archive), "."], cwd=site, check=True)
    subprocess.run(["unzip", "-q", str(archive), "-d", str(out)], check=True)


def _copyfile_only(site: Path, out: Path) -> None:
    """Bytes only, no metadata of any kind (what a copy onto a foreign file system keeps)."""
    shutil.copytree(site, out, copy_function=shutil.copyfile)


@contextlib.contextmanager
def _ramfs(where: Path) -> Iterator[Path]:
    """A ramfs mount (no extended attributes at all); skips where mounting is not allowed."""
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "ramfs", "ramfs", str(where)], capture_output=True,
                             check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount ramfs here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)


COPIES: dict[str, Callable[[Path, Path], None]] = {
    "cp -r": _cp_r, "tar": _tar, "zip": _zip, "bytes only": _copyfile_only}


def assert_serves_alike(copy: Path, original_url: str, sample_dir: Path) -> None:
    """``serve`` on ``copy`` passes the strict read-back and answers every key as the original."""
    server, url = serve_in_thread(str(copy))
    try:
        check_site_round_trip(sample_dir, url)
        assert_answers_alike(url, original_url, sorted(LocalStore(copy).walk()), COMPARED)
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("how", sorted(COPIES))
def test_a_copied_site_serves_and_validates(how: str, site_dir: Path, site_url: str, sample_dir: Path,
                                            tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    COPIES[how](site_dir, copy)
    assert sorted(LocalStore(copy).walk()) == sorted(LocalStore(site_dir).walk())
    assert validate(str(copy), keep=False, decode_frames=False).ok
    assert_serves_alike(copy, site_url, sample_dir)


def test_a_site_copied_onto_ramfs_serves_and_validates(site_dir: Path, site_url: str, sample_dir: Path,
                                                       tmp_path: Path) -> None:
    with _ramfs(tmp_path / "ram") as ram:
        copy = ram / "site"
        subprocess.run(["cp", "-a", str(site_dir), str(copy)], check=True)
        assert validate(str(copy), keep=False, decode_frames=False).ok
        assert_serves_alike(copy, site_url, sample_dir)


def test_a_site_converted_on_ramfs_is_whole(sample_dir: Path, site_dir: Path, tmp_path: Path) -> None:
    """Writing needs no extended attributes either: the same files as on any other file system."""
    from static_dicomweb.convert import convert

    with _ramfs(tmp_path / "ram") as ram:
        assert convert([sample_dir], LocalStore(ram / "site")).ok
        for key in LocalStore(site_dir).walk():
            if key.startswith("_site/") and key.endswith("report.json"):
                continue  # names the input paths and times
            assert LocalStore(ram / "site").get(key) == LocalStore(site_dir).get(key), key


def test_a_damaged_multipart_object_says_headers_lost(site_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(site_dir, copy)
    store = LocalStore(copy)
    key = next(k for k in store.walk() if k.endswith("/frames/1"))
    store.path(key).write_bytes(b"\x00" * 64)  # the boundary line is gone
    report = validate(str(copy), keep=False, decode_frames=False)
    assert next(f.message for f in report.findings if f.key == key).startswith(
        f"{copy}: {key}: headers lost")
    assert not any("incomplete" in f.message for f in report.findings)


def test_validate_of_a_missing_location_creates_nothing(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.chdir(tmp_path)
    exe = str(Path(sys.executable).with_name("static-dicomweb"))
    for location in ("no-such-site", "s3://no-such-bucket/prefix"):
        done = subprocess.run([exe, "validate", location, "--endpoint-url", "http://127.0.0.1:9"],
                              capture_output=True, text=True, check=False, timeout=120)
        assert done.returncode == 3, done.stderr
        assert "error" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_validate_of_a_read_only_site_keeps_no_report_and_says_so(
        site_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import os

    if os.geteuid() == 0:  # root writes anywhere: a read-only mount is what stops it
        ctx: contextlib.AbstractContextManager[Path] = _read_only_copy(site_dir, tmp_path)
    else:
        ctx = _chmod_copy(site_dir, tmp_path)
    with ctx as copy:
        report = validate(str(copy), decode_frames=False)
        assert report.ok
        assert open_store(str(copy)).headers("_site/validation-report.json") is None
    assert sum("was not kept" in r.message for r in caplog.records) == 1


@contextlib.contextmanager
def _read_only_copy(site_dir: Path, tmp_path: Path) -> Iterator[Path]:
    with _ramfs(tmp_path / "ro") as ram:
        shutil.copytree(site_dir, ram / "site")
        subprocess.run(["mount", "-o", "remount,ro", str(ram)], check=True)
        yield ram / "site"


@contextlib.contextmanager
def _chmod_copy(site_dir: Path, tmp_path: Path) -> Iterator[Path]:
    copy = tmp_path / "ro"
    shutil.copytree(site_dir, copy)
    for folder in [copy, *(p for p in copy.rglob("*") if p.is_dir())]:
        folder.chmod(0o555)
    try:
        yield copy
    finally:
        for folder in [copy, *(p for p in copy.rglob("*") if p.is_dir())]:
            folder.chmod(0o755)
