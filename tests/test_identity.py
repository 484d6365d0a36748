"""One instance, one identity: an SOP Instance UID names one object in the whole site.

Driven through the installed ``static-dicomweb`` command, as users run it, on
the synthetic sample (``conftest.sample_dir``) and variants of its files made
here with pydicom.  Also: bad pixel descriptions, inputs that are not regular
files, hidden files.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.dataset import Dataset

from static_dicomweb import keys
from static_dicomweb.convert import convert
from static_dicomweb.dicomjson import decode
from static_dicomweb.s3store import S3Store
from static_dicomweb.serve import serve_in_thread
from static_dicomweb.store import LocalStore, Store

from .conftest import sample_files
from .test_s3 import moto_endpoint  # noqa: F401  (the moto S3 server, a fixture)

EXE = str(Path(sys.executable).with_name("static-dicomweb"))


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    # the timeout only ends a hung run (a FIFO read before the fix); nothing here is timed
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, timeout=300,
                          check=False)


def variant(source: Path, out: Path, **changes: object) -> Path:
    """``source`` with some attributes changed, saved as Part 10 at ``out``."""
    ds = pydicom.dcmread(source)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out, enforce_file_format=True)
    return out


def report(site: Path) -> dict:  # type: ignore[type-arg]
    return decode(LocalStore(site).get(keys.conversion_report().key))  # type: ignore[no-any-return]


def instance_uids(site: Path | Store) -> list[str]:
    """Every SOP Instance UID that the site's study instance indexes list (duplicates kept)."""
    store = LocalStore(site) if isinstance(site, Path) else site
    uids = []
    for study in decode(store.get("studies")):
        rows = decode(store.get(keys.study_instances(study["0020000D"]["Value"][0]).key))
        uids += [row["00080018"]["Value"][0] for row in rows]
    return uids


def site_digest(site: Path) -> dict[str, str]:
    """Every object of a site (conversion report included), hashed."""
    store = LocalStore(site)
    return {key: hashlib.sha256(store.get(key)).hexdigest() for key in store.walk()}


@pytest.fixture()
def converted(sample_dir: Path, tmp_path: Path) -> Path:
    site = tmp_path / "site"
    assert cli("convert", sample_dir, "--out", site).returncode == 0
    return site


def test_uid_held_in_another_series_or_study_is_rejected_and_named(
        sample_dir: Path, converted: Path, tmp_path: Path) -> None:
    """Reusing a UID the site holds elsewhere: rejected and named, the rest converted, exit 1."""
    files = sample_files(sample_dir)
    held = pydicom.dcmread(files[0], stop_before_pixels=True)
    where = f"studies/{held.StudyInstanceUID}/series/{held.SeriesInstanceUID}"
    dups = tmp_path / "dups"
    # the same UID in a new series of its study, and in a new study; a second such UID
    variant(files[0], dups / "other-series.dcm", SeriesInstanceUID="1.2.826.0.1.3680043.10.1465.7.1")
    variant(files[0], dups / "other-study.dcm", StudyInstanceUID="1.2.826.0.1.3680043.10.1465.7.2",
            SeriesInstanceUID="1.2.826.0.1.3680043.10.1465.7.3")
    variant(files[1], dups / "other-study-2.dcm", StudyInstanceUID="1.2.826.0.1.3680043.10.1465.7.2",
            SeriesInstanceUID="1.2.826.0.1.3680043.10.1465.7.3")
    # and a good new instance beside them
    variant(files[2], dups / "new.dcm", SeriesInstanceUID="1.2.826.0.1.3680043.10.1465.7.4",
            SOPInstanceUID="1.2.826.0.1.3680043.10.1465.7.5")
    before = len(instance_uids(converted))
    for attempt in range(2):  # the rerun gives the same answer and changes nothing
        run = cli("convert", dups, "--out", converted)
        assert run.returncode == 1, (attempt, run.stderr)
        rejected = {Path(r["path"]).name: r["reason"] for r in report(converted)["rejected"]}
        assert set(rejected) == {"other-series.dcm", "other-study.dcm", "other-study-2.dcm"}
        for name, reason in rejected.items():
            assert "already in the site with different content" in reason, reason
            assert name in run.stderr
        assert held.SOPInstanceUID in rejected["other-series.dcm"]
        assert where in rejected["other-series.dcm"] and where in rejected["other-study.dcm"]
        assert report(converted)["instances"] == 1
        uids = instance_uids(converted)
        assert len(uids) == len(set(uids)) == before + 1
        assert LocalStore(converted).headers(keys.manifest().key) is not None
    assert cli("validate", converted).returncode == 0


def test_two_files_with_one_new_uid_in_two_studies(sample_dir: Path, tmp_path: Path) -> None:
    """Formerly exit 3 (``.../metadata: not in ...``) with no root indexes, and every rerun too."""
    files = sample_files(sample_dir)
    dups = tmp_path / "dups"
    uid = "1.2.826.0.1.3680043.10.1465.8.9"
    for n in (1, 2):
        variant(files[n], dups / f"d{n}.dcm", StudyInstanceUID=f"1.2.826.0.1.3680043.10.1465.8.{n}",
                SeriesInstanceUID=f"1.2.826.0.1.3680043.10.1465.8.{n}.1", SOPInstanceUID=uid)
    site = tmp_path / "site"
    for attempt in range(2):
        run = cli("convert", sample_dir, dups, "--out", site)
        assert run.returncode == 1, run.stderr
        (loser,) = report(site)["rejected"]
        assert Path(loser["path"]).name == "d2.dcm" and uid in loser["reason"]
        # the file kept is named; on the rerun, where it is in the site
        assert ("d1.dcm" if attempt == 0 else "studies/1.2.826.0.1.3680043.10.1465.8.1/") \
            in loser["reason"]
        uids = instance_uids(site)
        assert len(uids) == len(set(uids)) == len(files) + 1
    assert cli("validate", site).returncode == 0


def test_the_same_file_again_is_not_a_conflict(sample_dir: Path, converted: Path,
                                                tmp_path: Path) -> None:
    before = site_digest(converted)
    copy = tmp_path / "copy" / "again.dcm"
    copy.parent.mkdir()
    shutil.copy(sample_files(sample_dir)[0], copy)
    run = cli("convert", copy, "--out", converted)
    assert run.returncode == 0, run.stderr
    after = site_digest(converted)
    for digests in (before, after):
        digests.pop(keys.conversion_report().key)
    assert after == before


def test_a_site_without_identity_records_is_still_guarded(sample_dir: Path, converted: Path,
                                                          tmp_path: Path) -> None:
    """A site written before the records: a reuse in the same series is caught, and recorded."""
    shutil.rmtree(converted / "_site" / "instances")
    source = sample_files(sample_dir)[0]
    held = pydicom.dcmread(source, stop_before_pixels=True)
    changed = variant(source, tmp_path / "changed.dcm", PatientComments="other content")
    run = cli("convert", changed, "--out", converted)
    assert run.returncode == 1, run.stderr
    (rejected,) = report(converted)["rejected"]
    assert rejected["path"] == str(changed) and "already in the site" in rejected["reason"]
    record = json.loads(LocalStore(converted).get(keys.instance_record(held.SOPInstanceUID).key))
    assert record["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert cli("validate", converted).returncode == 0


def test_conflicting_duplicates_in_one_run_settle_alike(sample_dir: Path, tmp_path: Path) -> None:
    """Any --workers, any input order, every run: the same site, the first path kept, the loser named."""
    files = sample_files(sample_dir)
    uid = "1.2.826.0.1.3680043.10.1465.9.1"
    dups = tmp_path / "dups"
    # a.dcm is first in path order and slow to read (64 MB), so that with two workers b.dcm
    # usually claims the UID first and the run must put a.dcm in its place
    big = pydicom.dcmread(files[0])
    big.SOPInstanceUID = uid
    frames = 2048
    big.NumberOfFrames = frames
    big.PixelData = bytes(big.PixelData) * frames
    (dups).mkdir()
    big.save_as(dups / "a.dcm", enforce_file_format=True)
    variant(files[0], dups / "b.dcm", SOPInstanceUID=uid)
    shutil.copy(dups / "a.dcm", dups / "c.dcm")  # a.dcm again: kept beside it, not a conflict
    runs: list[dict[str, str]] = []
    orders = [[dups, sample_dir], [sample_dir, dups]]
    for n, (workers, order) in enumerate([(1, 0), (2, 0), (2, 1), (2, 0), (4, 1), (2, 1)]):
        site = tmp_path / f"site{n}"
        run = cli("convert", *orders[order], "--out", site, "--workers", str(workers))
        assert run.returncode == 1, run.stderr
        (loser,) = report(site)["rejected"]
        assert Path(loser["path"]).name == "b.dcm", (workers, loser)
        assert uid in loser["reason"] and str(dups / "a.dcm") in loser["reason"], loser["reason"]
        runs.append(site_digest(site))
    assert all(r == runs[0] for r in runs)
    assert cli("validate", tmp_path / "site0").returncode == 0
    metadata = decode(LocalStore(tmp_path / "site1").get(
        keys.instance_metadata(big.StudyInstanceUID, big.SeriesInstanceUID, uid).key))
    assert metadata[0]["00280008"]["Value"] == [frames]
    record = json.loads(LocalStore(tmp_path / "site1").get(keys.instance_record(uid).key))
    assert record["sha256"] == hashlib.sha256((dups / "a.dcm").read_bytes()).hexdigest()


def test_stow_part_reusing_a_uid_in_another_series_is_refused(converted: Path,
                                                             sample_dir: Path) -> None:
    """A label posted with a CT's SOP Instance UID in its own series: formerly 200 and a second row."""
    held = pydicom.dcmread(sample_files(sample_dir)[0])
    label = pydicom.dcmread(sample_files(sample_dir)[0])
    label.SeriesInstanceUID = "1.2.826.0.1.3680043.10.1465.10.1"
    label.Modality, label.SeriesNumber = "SEG", 99
    buf = io.BytesIO()
    label.save_as(buf, enforce_file_format=True)
    boundary = "identity-test"
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + buf.getvalue()
            + f"\r\n--{boundary}--\r\n".encode())
    before = instance_uids(converted)
    server, url = serve_in_thread(str(converted), stow_token="t0ken")
    try:
        resp = requests.post(f"{url}/studies", data=body, timeout=60, headers={
            "Authorization": "Bearer t0ken",
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
    finally:
        server.shutdown()
        server.server_close()
    assert resp.status_code == 409, resp.text
    (failed,) = resp.json()["00081198"]["Value"]
    assert failed["00081155"]["Value"] == [str(held.SOPInstanceUID)]
    assert instance_uids(converted) == before


def test_duplicates_on_s3_are_rejected_and_the_rest_indexed(sample_dir: Path, tmp_path: Path,
                                                            moto_endpoint: str) -> None:  # noqa: F811
    files = sample_files(sample_dir)
    dups = tmp_path / "dups"
    held = pydicom.dcmread(files[0], stop_before_pixels=True)
    for n in (1, 2):
        variant(files[n], dups / f"d{n}.dcm", StudyInstanceUID=f"1.2.826.0.1.3680043.10.1465.11.{n}",
                SOPInstanceUID=held.SOPInstanceUID)
    store = S3Store("s3://identity-site/dicomweb", endpoint_url=moto_endpoint)
    store.client.create_bucket(Bucket="identity-site")
    for _ in range(2):
        run = cli("convert", sample_dir, dups, "--out", store.url, "--endpoint-url", moto_endpoint,
                  "--workers", "2")
        assert run.returncode == 1, run.stderr
        assert "d1.dcm" in run.stderr and "d2.dcm" in run.stderr
        uids = instance_uids(store)
        assert len(uids) == len(set(uids)) == len(files)
        assert store.headers(keys.manifest().key) is not None


# -- bad pixel descriptions ------------------------------------------------------------

def _set(**changes: object) -> Callable[[Dataset], None]:
    def change(ds: Dataset) -> None:
        for keyword, value in changes.items():
            setattr(ds, keyword, value)
    return change


def _delete(keyword: str) -> Callable[[Dataset], None]:
    return lambda ds: delattr(ds, keyword)


@pytest.mark.parametrize(("change", "words"), [
    (_set(Rows=0), "(0028,0010) Rows is 0"),
    (_set(Columns=0), "(0028,0011) Columns is 0"),
    (_set(SamplesPerPixel=0), "(0028,0002) SamplesPerPixel is 0"),
    (_delete("SamplesPerPixel"), "(0028,0002) SamplesPerPixel is missing"),
    (_set(BitsAllocated=8, BitsStored=8, HighBit=7), "do not match the data"),
    (_set(BitsAllocated=12), "(0028,0100) BitsAllocated is 12"),
    (_set(BitsStored=17), "(0028,0101) BitsStored is 17"),
    (_set(NumberOfFrames="0"), "(0028,0008) NumberOfFrames is '0'"),
    (_set(Rows=32), "do not match the data"),  # half the data left over
], ids=["rows-0", "columns-0", "samples-0", "samples-missing", "bits-8-on-16-bit-data",
        "bits-12", "bits-stored-17", "frames-0", "rows-half"])
def test_bad_pixel_description_is_rejected(sample_dir: Path, tmp_path: Path,
                                           change: Callable[[Dataset], None], words: str) -> None:
    ds = pydicom.dcmread(sample_files(sample_dir)[0])
    change(ds)
    path = tmp_path / "bad.dcm"
    ds.save_as(path, enforce_file_format=True)
    site = tmp_path / "site"
    result = convert([path, *sample_files(sample_dir)[1:4]], LocalStore(site))
    (rejected,) = result.rejected
    assert rejected.path == str(path) and words in rejected.reason, rejected.reason
    assert len(result.written) == 3
    assert cli("validate", site).returncode == 0


# -- inputs that are not files to convert ----------------------------------------------

def test_fifo_socket_device_and_hidden_entries_are_skipped_and_named(sample_dir: Path,
                                                                     tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    shutil.copytree(sample_dir, inputs)
    os.mkfifo(inputs / "pipe.dcm")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(inputs / "sock.dcm"))
    (inputs / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (inputs / ".cache").mkdir()
    shutil.copy(sample_files(sample_dir)[0], inputs / ".cache" / "copy.dcm")
    try:
        site = tmp_path / "site"
        run = cli("convert", inputs, "/dev/null", "--out", site)
    finally:
        server.close()
    assert run.returncode == 0, run.stderr
    skipped = {r["path"]: r["reason"] for r in report(site)["skipped"]}
    assert skipped == {
        str(inputs / ".DS_Store"): "a hidden file (its name starts with a dot); not read",
        str(inputs / ".cache"): "a hidden folder (its name starts with a dot); not read",
        str(inputs / "pipe.dcm"): "a FIFO (named pipe), not a regular file; not read",
        str(inputs / "sock.dcm"): "a socket, not a regular file; not read",
        "/dev/null": "a device, not a regular file; not read",
    }
    for path in skipped:
        assert path in run.stderr
    assert report(site)["instances"] == len(sample_files(sample_dir))


def test_the_pipeline_skips_a_fifo_and_names_it(sample_dir: Path, tmp_path: Path) -> None:
    """The DAG's steps: the folder source lists around a FIFO, the batch and the report name it."""
    from static_dicomweb.pipeline import aggregate_batches, convert_batch
    from static_dicomweb.sources.folder import FolderSource

    inputs = tmp_path / "in"
    shutil.copytree(sample_dir, inputs)
    os.mkfifo(inputs / "pipe.dcm")
    refs = list(FolderSource(inputs).list_series())
    assert sum(r.instances for r in refs) == len(sample_files(sample_dir))
    store = LocalStore(tmp_path / "site")
    batch = convert_batch([str(inputs)], store)
    summary = aggregate_batches([batch], store)
    assert summary["instances"] == len(sample_files(sample_dir))
    assert report(tmp_path / "site")["skipped"] == [
        {"path": str(inputs / "pipe.dcm"), "reason": "a FIFO (named pipe), not a regular file; not read"}]

