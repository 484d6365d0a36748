"""The validator: a converted site conforms; each kind of damage is found and named."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from static_dicomweb import keys
from static_dicomweb.dicomjson import decode, encode, gzip_bytes
from static_dicomweb.store import LocalStore
from static_dicomweb.validate import Report, check_json_model, validate


@pytest.fixture
def damaged(site_dir: Path, tmp_path: Path) -> tuple[Path, LocalStore]:
    copy = tmp_path / "site"
    shutil.copytree(site_dir, copy)  # copies extended attributes too (copystat)
    return copy, LocalStore(copy)


def first_series(store: LocalStore) -> tuple[str, str, list[dict]]:  # type: ignore[type-arg]
    row = decode(store.get("series"))[0]
    study, series = row["0020000D"]["Value"][0], row["0020000E"]["Value"][0]
    return study, series, decode(store.get(keys.series_metadata(study, series).key))


def test_converted_site_conforms(site_dir: Path, tmp_path: Path) -> None:
    report = validate(str(site_dir), keep=False)
    assert report.ok, report.findings
    assert report.checked["frames"] >= report.checked["instances"] > 0
    assert report.checked["studies"] >= 2


def test_site_over_http_conforms(site_url: str) -> None:
    report = validate(site_url, decode_frames=False)
    assert report.ok, report.findings
    assert report.checked["series"] >= 4


def test_report_is_kept_in_the_site(damaged: tuple[Path, LocalStore]) -> None:
    site, store = damaged
    validate(str(site))
    kept = json.loads(store.get(keys.validation_report().key))
    assert kept["ok"] is True and kept["errors"] == 0


def test_missing_frame_is_named(damaged: tuple[Path, LocalStore]) -> None:
    site, store = damaged
    study, series, metas = first_series(store)
    sop = metas[0]["00080018"]["Value"][0]
    frame = keys.frame(study, series, sop, 1, "", "").key
    store.path(frame).unlink()
    report = validate(str(site), keep=False)
    assert not report.ok
    assert any(f.key == frame and "missing" in f.message for f in report.findings)


def test_boundary_missing_from_header_is_found(damaged: tuple[Path, LocalStore]) -> None:
    site, store = damaged
    study, series, metas = first_series(store)
    sop = metas[0]["00080018"]["Value"][0]
    spec = keys.frame(study, series, sop, 1, "application/octet-stream", "1.2.840.10008.1.2.1")
    # a folder's headers follow from the body's first line: a body without it lost them
    body = store.get(spec.key)
    store.path(spec.key).write_bytes(body[body.index(b"\r\n\r\n") + 4:])
    report = validate(str(site), keep=False)
    assert any(f.key == spec.key and "headers lost" in f.message for f in report.findings)


def test_count_mismatch_and_string_numbers_are_found(damaged: tuple[Path, LocalStore]) -> None:
    site, store = damaged
    rows = decode(store.get("studies"))
    rows[0]["00201208"]["Value"] = [str(rows[0]["00201208"]["Value"][0] + 1)]  # a string, and wrong
    store.put(keys.studies(), [gzip_bytes(encode(rows))])
    report = validate(str(site), keep=False)
    messages = " | ".join(f.message for f in report.findings)
    assert "not a number" in messages
    assert "instances" in messages


def test_unresolvable_bulk_data_uri_is_found(damaged: tuple[Path, LocalStore]) -> None:
    site, store = damaged
    study, _series, _metas = first_series(store)
    for key in list(store.walk(f"studies/{study}")):
        if "/bulkdata/" in key or key.endswith("/frames/1"):
            store.path(key).unlink()
            break
    report = validate(str(site), keep=False)
    assert not report.ok


def test_json_model_rules() -> None:
    report = Report("x")
    check_json_model({
        "00100010": {"vr": "PN", "Value": ["Doe^John"]},
        "00201208": {"vr": "IS", "Value": ["12"]},
        "00080005": {"vr": "CS", "Value": ["ISO_IR 192"], "InlineBinary": "AA=="},
        "7FE00010": {"vr": "OW", "Value": [1, 2]},
        "0008103e": {"vr": "LO", "Value": ["x"]},
    }, "k", report)
    text = " | ".join(f.message for f in report.findings)
    for expected in ("PersonName", "not a number", "at most one", "InlineBinary or BulkDataURI",
                     "not eight upper-case hex", "not sorted"):
        assert expected in text, expected


def test_gzip_is_declared(damaged: tuple[Path, LocalStore]) -> None:
    site, store = damaged
    body = gzip.decompress(store.get("studies"))
    store.put(keys.ObjectSpec("studies", keys.DICOM_JSON, cache_control=keys.INDEX), [body])
    assert validate(str(site), keep=False).ok  # plain now, still fine


def test_pixels_compared_with_the_source(damaged: tuple[Path, LocalStore], sample_dir: Path) -> None:
    site, store = damaged
    clean = validate(str(site), keep=False, source=[sample_dir])
    assert clean.ok, clean.findings
    assert clean.checked["frames compared with the source"] >= clean.checked["instances"]
    key = next(k for k in store.walk("studies") if k.endswith("/frames/1")
               and 'type="application/octet-stream"' in store.headers(k)["Content-Type"])  # type: ignore[index]
    headers = store.headers(key)
    body = bytearray(store.get(key))
    body[len(body) // 2] ^= 0xFF  # one wrong pixel byte, the multipart structure intact
    store.put(keys.ObjectSpec(key, headers["Content-Type"]), [bytes(body)])  # type: ignore[index]
    report = validate(str(site), keep=False, source=[sample_dir])
    assert [f.key for f in report.findings if "pixels differ" in f.message] == [key]


def test_html_report_with_thumbnails(damaged: tuple[Path, LocalStore]) -> None:
    site, store = damaged
    validate(str(site))
    page = store.get("_site/validation-report.html").decode()
    assert "conforms" in page and page.count("<img") >= 2
    assert store.headers("_site/validation-report.html")["Content-Type"] == "text/html"  # type: ignore[index]
