"""Conversion as a transaction: bad input, conflicts, idempotence, increments, two writers."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate

from static_dicomweb import keys
from static_dicomweb.convert import convert
from static_dicomweb.dicomjson import decode
from static_dicomweb.store import BODY, MAPPING_FILE, LocalStore
from static_dicomweb.validate import validate

from .conftest import sample_files


def tree_digest(root: Path) -> dict[str, str]:
    """Every stored object (body and headers) of a site, hashed."""
    store = LocalStore(root)
    out = {}
    for key in store.walk():
        body = store.get(key)
        out[key] = hashlib.sha256(body + repr(sorted(store.headers(key).items())).encode()).hexdigest()  # type: ignore[union-attr]
    return out


def series_dirs(sample: Path) -> list[Path]:
    return sorted({p.parent for p in sample_files(sample)})


def write_bad_inputs(folder: Path) -> dict[str, str]:
    """One file per kind of bad input; returns name -> words the rejection must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    ct = Path(get_testdata_file("CT_small.dcm"))  # type: ignore[arg-type]
    (folder / "empty.dcm").write_bytes(b"")
    (folder / "notdicom.dcm").write_bytes(b"this is a text file, not DICOM\n" * 20)
    (folder / "truncated.dcm").write_bytes(ct.read_bytes()[:3000])

    def variant(name: str, **changes: object) -> None:
        ds = pydicom.dcmread(ct)
        for keyword, value in changes.items():
            if value is None:
                delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
        fallback = f"1.2.826.0.1.3680043.10.1465.99.{len(name)}{ord(name[0])}"
        ds.SOPInstanceUID = changes.get("SOPInstanceUID") or fallback
        if "SOPInstanceUID" in changes and changes["SOPInstanceUID"] is None:
            del ds.SOPInstanceUID
        ds.save_as(folder / name, enforce_file_format=True)

    variant("nostudy.dcm", StudyInstanceUID=None)
    variant("slash.dcm", SOPInstanceUID="1.2.3/../../4")
    variant("dotdot.dcm", SeriesInstanceUID="..")
    variant("long.dcm", StudyInstanceUID="1." + "2" * 70)
    ds = pydicom.dcmread(ct)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2, nothing here decodes it
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(96)])
    ds["PixelData"].VR = "OB"
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.10.1465.99.7"
    ds.save_as(folder / "mpeg.dcm", enforce_file_format=True)
    return {"empty.dcm": "empty", "notdicom.dcm": "not", "truncated.dcm": "",
            "nostudy.dcm": "StudyInstanceUID", "slash.dcm": "SOPInstanceUID",
            "dotdot.dcm": "SeriesInstanceUID", "long.dcm": "64",
            "mpeg.dcm": "1.2.840.10008.1.2.4.100"}


def test_bad_input_is_rejected_and_valid_input_kept(sample_dir: Path, tmp_path: Path) -> None:
    bad = write_bad_inputs(tmp_path / "bad")
    site = tmp_path / "parent" / "site"
    result = convert([sample_dir, tmp_path / "bad"], LocalStore(site))
    rejected = {Path(r.path).name: r.reason for r in result.rejected}
    assert set(rejected) == set(bad)
    for name, words in bad.items():
        assert words in rejected[name], (name, rejected[name])
    assert len(result.written) == len(sample_files(sample_dir))
    report = decode(LocalStore(site).get(keys.conversion_report().key))
    assert {Path(r["path"]).name for r in report["rejected"]} == set(bad)
    assert all(r["reason"] for r in report["rejected"])
    # nothing outside DEST: the parent holds only the site
    assert [p.name for p in (tmp_path / "parent").iterdir()] == ["site"]
    assert not any(".." in p.parts for p in site.rglob("*"))


def test_conflicting_instance_is_never_replaced(sample_dir: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    convert([sample_dir], LocalStore(site))
    before = tree_digest(site)
    victim = sample_files(sample_dir)[3]
    ds = pydicom.dcmread(victim)
    ds.PatientComments = "changed content, same SOP Instance UID"
    changed = tmp_path / "changed.dcm"
    ds.save_as(changed, enforce_file_format=True)
    result = convert([changed], LocalStore(site))
    assert not result.written
    (rejected,) = result.rejected
    assert "already in the site with different content" in rejected.reason
    after = tree_digest(site)
    after.pop(keys.conversion_report().key)
    before.pop(keys.conversion_report().key)
    assert after == before


def test_duplicate_in_one_run_keeps_the_first(sample_dir: Path, tmp_path: Path) -> None:
    victim = sample_files(sample_dir)[0]
    ds = pydicom.dcmread(victim)
    ds.PatientComments = "another version"
    (tmp_path / "in").mkdir()
    shutil.copy(victim, tmp_path / "in" / "a.dcm")
    ds.save_as(tmp_path / "in" / "b.dcm", enforce_file_format=True)
    shutil.copy(victim, tmp_path / "in" / "c.dcm")  # same bytes again: not a conflict
    result = convert([tmp_path / "in"], LocalStore(tmp_path / "site"))
    assert [Path(w.path).name for w in result.written] == ["a.dcm", "c.dcm"]
    assert [Path(r.path).name for r in result.rejected] == ["b.dcm"]


def test_rerun_is_byte_identical(sample_dir: Path, site_dir: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    convert([sample_dir], LocalStore(again))
    first = tree_digest(site_dir)
    assert tree_digest(again) == first
    store = LocalStore(again)
    frames = {store.path(k): store.path(k).stat().st_mtime_ns for k in store.walk()
              if "/frames/" in k}
    assert frames
    convert([sample_dir], LocalStore(again))  # and once more onto itself
    assert tree_digest(again) == first
    # complete instances (same bytes, same profile) are not written again
    assert {p: p.stat().st_mtime_ns for p in frames} == frames


def test_changing_profile_writes_what_is_missing(sample_dir: Path, site_dir: Path,
                                                 tmp_path: Path) -> None:
    site = tmp_path / "site"
    convert([sample_dir], LocalStore(site), profile="viewer")
    assert convert([sample_dir], LocalStore(site)).ok
    assert validate(str(site), keep=False).ok
    assert tree_digest(site).keys() >= tree_digest(site_dir).keys()


def test_workers_give_the_same_site(sample_dir: Path, site_dir: Path, tmp_path: Path) -> None:
    parallel = tmp_path / "parallel"
    result = convert([sample_dir], LocalStore(parallel), workers=2)
    assert result.ok
    assert tree_digest(parallel) == tree_digest(site_dir)


def test_adding_a_series_touches_only_its_study_and_roots(sample_dir: Path, site_dir: Path,
                                                          tmp_path: Path) -> None:
    dirs = series_dirs(sample_dir)
    new, rest = dirs[-1], dirs[:-1]
    site = tmp_path / "site"
    convert(rest, LocalStore(site))
    store = LocalStore(site)
    mtimes = {k: store.path(k).stat().st_mtime_ns for k in store.walk()}
    new_ds = pydicom.dcmread(next(new.glob("*.dcm")), stop_before_pixels=True)
    convert([new], LocalStore(site))
    changed = {k for k, t in mtimes.items()
               if not store.path(k).exists() or store.path(k).stat().st_mtime_ns != t}
    study = f"studies/{new_ds.StudyInstanceUID}"
    allowed = {"studies", "series", f"{study}/series", f"{study}/instances", f"{study}/metadata",
               f"{study}/thumbnail", keys.manifest().key, keys.conversion_report().key,
               keys.root_record("studies").key, keys.root_record("series").key}
    others = {uid for k in mtimes for uid in k.split("/")[:-1] if uid.startswith("1.")} - {
        new_ds.StudyInstanceUID, new_ds.SeriesInstanceUID}
    extra = changed - allowed
    # query answers: only the new study's, its patient's and modality's, and the root pages
    assert all(k.startswith("_q/") for k in extra), extra
    assert not [k for k in extra if "InstanceUID/" in k and k.rsplit("/", 1)[-1] in others]
    increment, whole = tree_digest(site), tree_digest(site_dir)
    for digests in (increment, whole):  # the report describes the last run only
        digests.pop(keys.conversion_report().key)
    assert increment == whole


def _convert_in_child(inputs: list[str], site: str) -> None:
    convert(inputs, LocalStore(site))


def test_two_writers_into_one_study_lose_nothing(sample_dir: Path, site_dir: Path,
                                                 tmp_path: Path) -> None:
    by_study: dict[str, list[Path]] = {}
    for folder in series_dirs(sample_dir):
        study = pydicom.dcmread(next(folder.glob("*.dcm")), stop_before_pixels=True).StudyInstanceUID
        by_study.setdefault(study, []).append(folder)
    study, folders = max(by_study.items(), key=lambda item: len(item[1]))
    assert len(folders) >= 2
    site = tmp_path / "site"
    ctx = multiprocessing.get_context("fork")
    for attempt in range(3):
        shutil.rmtree(site, ignore_errors=True)
        halves = [[str(f) for f in folders[0::2]], [str(f) for f in folders[1::2]]]
        procs = [ctx.Process(target=_convert_in_child, args=(half, str(site))) for half in halves]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(120)
            assert proc.exitcode == 0
        rows = decode(LocalStore(site).get(keys.study_series(study).key))
        assert len(rows) == len(folders), f"attempt {attempt}: lost a series"
        roots = decode(LocalStore(site).get("series"))
        assert len(roots) == len(folders)
        (study_row,) = decode(LocalStore(site).get("studies"))
        assert study_row["00201206"]["Value"] == [len(folders)]


@pytest.mark.parametrize("profile", ["viewer", "full"])
def test_profiles(sample_dir: Path, tmp_path: Path, profile: str) -> None:
    site = tmp_path / profile
    result = convert([sample_dir], LocalStore(site), profile=profile)
    assert result.ok
    w = result.written[0]
    store = LocalStore(site)
    has_p10 = store.headers(keys.instance(w.study, w.series, w.sop).key) is not None
    has_thumb = store.headers(keys.instance_thumbnail(w.study, w.series, w.sop).key) is not None
    assert has_p10 == (profile == "full")
    assert has_thumb == (profile == "full")
    assert store.headers(keys.series_metadata(w.study, w.series).key) is not None


def test_no_write_outside_dest_with_hostile_uid(tmp_path: Path) -> None:
    ct = Path(get_testdata_file("CT_small.dcm"))  # type: ignore[arg-type]
    ds = pydicom.dcmread(ct)
    ds.StudyInstanceUID = "../../../escape"
    ds.save_as(tmp_path / "hostile.dcm", enforce_file_format=True)
    site = tmp_path / "a" / "site"
    result = convert([tmp_path / "hostile.dcm"], LocalStore(site))
    assert not result.written
    assert not (tmp_path / "escape").exists()
    assert sorted(os.listdir(tmp_path)) == ["a", "hostile.dcm"]


# -- the local folder's key-to-file mapping ------------------------------------------

def test_an_instance_creates_no_folder(site_dir: Path) -> None:
    """An instance's objects are files in its series' ``instances/`` folder."""
    store = LocalStore(site_dir)
    assert (site_dir / MAPPING_FILE).is_file()
    instance_folders = [p for p in (site_dir / "studies").rglob("instances") if p.is_dir()]
    assert instance_folders
    for folder in instance_folders:
        assert not [p for p in folder.iterdir() if p.is_dir()], folder
    key = next(k for k in store.walk() if k.endswith("/frames/1"))
    *_, sop, _, _ = key.split("/")
    assert store.path(key).name == f"{sop}+frames+1{BODY}"
    assert store.path(key).parent == store.path(key.rsplit("/", 2)[0]).parent


def test_file_with_a_decoded_character_set_is_converted(tmp_path: Path) -> None:
    """A character set that pydicom decoded while reading must not break the attribute cache."""
    path = get_testdata_file("J2K_pixelrep_mismatch.dcm")
    assert path is not None
    result = convert([path], LocalStore(tmp_path / "site"))
    assert result.ok, result.rejected


@pytest.mark.parametrize("workers", [1, 2])
def test_a_write_that_fails_stops_the_run_and_gives_every_uid_back(sample_dir: Path, tmp_path: Path,
                                                                   workers: int) -> None:
    # each worker stores an instance's objects on its writer thread while it converts the next
    # file: a failure there must still stop the run, and the rerun redo it; one worker also gives
    # every UID back (the others' processes are ended mid-file when the run stops)
    series = [p for p in sample_files(sample_dir) if p.parent == sample_files(sample_dir)[0].parent]
    first = pydicom.dcmread(series[0], stop_before_pixels=True)
    site = tmp_path / "site"
    blocked = site / "studies" / first.StudyInstanceUID / "series" / first.SeriesInstanceUID
    blocked.mkdir(parents=True)
    (blocked / "instances").write_text("a file where the instances' folder goes")
    with pytest.raises(NotADirectoryError):
        convert(series, LocalStore(site), workers=workers)
    if workers == 1:
        assert not list((site / "_site" / "instances").rglob("*" + BODY))
    assert sorted(p.name for p in blocked.iterdir()) == ["instances"]
    # the run is redone whole once the folder is free
    (blocked / "instances").unlink()
    assert len(convert(series, LocalStore(site), workers=workers).written) == len(series)
    assert validate(str(site), keep=False).ok
