"""STOW-RS write-back: `serve --stow-token` and the Lambda handler, with the real dicomweb-client."""

from __future__ import annotations

import base64
import copy
import io
import json
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from static_dicomweb import keys, multipart
from static_dicomweb.serve import serve_in_thread
from static_dicomweb.store import LocalStore
from static_dicomweb.stow import authorized, lambda_handler
from static_dicomweb.validate import validate

from .conftest import sample_files

pytestmark = pytest.mark.integration
TOKEN = "s3cret-token"


@pytest.fixture
def writable(site_dir: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    site = tmp_path / "site"
    shutil.copytree(site_dir, site)
    server, url = serve_in_thread(str(site), stow_token=TOKEN)
    yield site, url
    server.shutdown()
    server.server_close()


def new_series(sample_dir: Path) -> list[pydicom.Dataset]:
    """Three instances of a new series in an existing study."""
    series = generate_uid()
    out = []
    for path in sample_files(sample_dir)[:3]:
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesNumber = 77
        out.append(ds)
    return out


def part10(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def multipart_body(parts: list[bytes], boundary: str = "stow-test") -> tuple[bytes, str]:
    body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n"
                    for p in parts) + b"--" + boundary.encode() + b"--\r\n"
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def test_token_forms() -> None:
    basic = "Basic " + base64.b64encode(f"monailabel:{TOKEN}".encode()).decode()
    assert authorized(f"Bearer {TOKEN}", TOKEN)
    assert authorized(basic, TOKEN)
    assert not authorized("Bearer nope", TOKEN)
    assert not authorized(None, TOKEN)
    assert not authorized("Basic !!!", TOKEN)
    assert not authorized(f"Bearer {TOKEN}", "")


def test_read_only_serve_takes_no_writes(site_url: str) -> None:
    body, ctype = multipart_body([b"x"])
    resp = requests.post(f"{site_url}/studies", data=body, timeout=30,
                         headers={"Content-Type": ctype, "Authorization": f"Bearer {TOKEN}"})
    assert resp.status_code == 405


def test_writes_need_the_token(writable, sample_dir: Path) -> None:  # type: ignore[no-untyped-def]
    _, url = writable
    body, ctype = multipart_body([part10(new_series(sample_dir)[0])])
    for auth in (None, "Bearer wrong", "Basic " + base64.b64encode(b"u:wrong").decode()):
        headers = {"Content-Type": ctype, **({"Authorization": auth} if auth else {})}
        resp = requests.post(f"{url}/studies", data=body, headers=headers, timeout=30)
        assert resp.status_code == 401
        assert "WWW-Authenticate" in resp.headers


def test_stored_instances_are_visible_and_identical(writable, sample_dir: Path) -> None:  # type: ignore[no-untyped-def]
    site, url = writable
    datasets = new_series(sample_dir)
    client = DICOMwebClient(url, headers={"Authorization": f"Bearer {TOKEN}"})
    response = client.store_instances(datasets)  # the STOW-RS response, as a pydicom Dataset
    assert len(response.ReferencedSOPSequence) == 3
    assert "FailedSOPSequence" not in response
    study, series = datasets[0].StudyInstanceUID, datasets[0].SeriesInstanceUID
    (row,) = client.search_for_series(search_filters={"SeriesInstanceUID": series})
    assert row["00201209"]["Value"] == [3]
    assert series in {r["0020000E"]["Value"][0] for r in client.search_for_series(
        search_filters={"StudyInstanceUID": study})}
    for ds in datasets:
        assert client.retrieve_instance(study, series, ds.SOPInstanceUID) == ds
    assert validate(str(site), keep=False).ok


def test_monai_label_style_basic_auth_and_a_seg(writable) -> None:  # type: ignore[no-untyped-def]
    site, url = writable
    seg = pydicom.dcmread(get_testdata_file("liver.dcm"))  # a DICOM SEG, 1-bit multi-frame
    body, ctype = multipart_body([part10(seg)])
    basic = "Basic " + base64.b64encode(f"monailabel:{TOKEN}".encode()).decode()
    resp = requests.post(f"{url}/studies", data=body, timeout=60,
                         headers={"Content-Type": ctype, "Authorization": basic})
    assert resp.status_code == 200, resp.text
    client = DICOMwebClient(url)
    (row,) = client.search_for_series(search_filters={"SeriesInstanceUID": seg.SeriesInstanceUID})
    assert row["00080060"]["Value"] == ["SEG"]
    assert client.search_for_series(search_filters={"Modality": "SEG"})
    assert validate(str(site), keep=False).ok


def test_bad_parts_fail_and_good_parts_stay(writable, sample_dir: Path) -> None:  # type: ignore[no-untyped-def]
    _, url = writable
    good = new_series(sample_dir)[0]
    body, ctype = multipart_body([part10(good), b"not dicom at all"])
    resp = requests.post(f"{url}/studies", data=body, timeout=30,
                         headers={"Content-Type": ctype, "Authorization": f"Bearer {TOKEN}"})
    assert resp.status_code == 202
    answer = resp.json()
    assert len(answer["00081199"]["Value"]) == 1
    (failed,) = answer["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [0xC000]


def test_wrong_study_and_conflicts_are_refused(writable, sample_dir: Path) -> None:  # type: ignore[no-untyped-def]
    _, url = writable
    ds = pydicom.dcmread(sample_files(sample_dir)[0])
    headers = {"Authorization": f"Bearer {TOKEN}"}
    body, ctype = multipart_body([part10(ds)])
    resp = requests.post(f"{url}/studies/1.2.3.4", data=body, timeout=30,
                         headers={**headers, "Content-Type": ctype})
    assert resp.status_code == 409
    assert resp.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xA900]
    ds.PatientComments = "other content, same SOP Instance UID"
    body, ctype = multipart_body([part10(ds)])
    resp = requests.post(f"{url}/studies", data=body, timeout=30, headers={**headers, "Content-Type": ctype})
    assert resp.status_code == 409
    assert resp.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0x0110]


def test_lambda_handler(site_dir: Path, tmp_path: Path, sample_dir: Path,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    shutil.copytree(site_dir, site)
    monkeypatch.setenv("SITE_URL", str(site))
    monkeypatch.setenv("STOW_TOKEN", TOKEN)
    ds = new_series(sample_dir)[0]
    body, ctype = multipart_body([part10(ds)])
    event = {"rawPath": f"/studies/{ds.StudyInstanceUID}", "isBase64Encoded": True,
             "body": base64.b64encode(body).decode(),
             "requestContext": {"http": {"method": "POST"}},
             "headers": {"content-type": ctype, "authorization": f"Bearer {TOKEN}"}}
    out = lambda_handler(event)
    assert out["statusCode"] == 200, out["body"]
    assert json.loads(out["body"])["00081199"]["Value"][0]["00081155"]["Value"] == [ds.SOPInstanceUID]
    assert LocalStore(site).headers(keys.instance_metadata(
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID).key) is not None
    assert lambda_handler({**event, "headers": {"content-type": ctype}})["statusCode"] == 401
    assert lambda_handler({**event, "requestContext": {"http": {"method": "GET"}}})["statusCode"] == 405


# -- STOW-RS as clients send it ---------------------------------------------------------------------

def half_mb_series(sample_dir: Path, count: int) -> list[pydicom.Dataset]:
    """``count`` instances of a new series, 512 x 512 x 16 bits each (0.5 MB of pixels)."""
    rng = np.random.default_rng(7)
    base = next(ds for ds in map(pydicom.dcmread, sample_files(sample_dir))
                if ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
                and int(ds.get("NumberOfFrames", 1)) == 1)
    series, out = generate_uid(), []
    for number in range(1, count + 1):
        ds = copy.deepcopy(base)
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesNumber, ds.InstanceNumber = 88, number
        ds.ImagePositionPatient = [0, 0, number]
        ds.Rows = ds.Columns = 512
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = rng.integers(0, 4096, (512, 512), dtype=np.uint16).tobytes()
        out.append(ds)
    return out


def test_dicomweb_client_default_chunked_upload_of_ten_half_mb_instances(writable, sample_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """dicomweb-client sends a body over its chunk size (1 MB) with Transfer-Encoding: chunked."""
    site, url = writable
    datasets = half_mb_series(sample_dir, 10)
    client = DICOMwebClient(url, headers={"Authorization": f"Bearer {TOKEN}"})
    assert client._chunk_size < 10 * 512 * 512 * 2  # the default: the body goes out chunked
    response = client.store_instances(datasets)
    assert len(response.ReferencedSOPSequence) == 10
    assert "FailedSOPSequence" not in response
    study, series = datasets[0].StudyInstanceUID, datasets[0].SeriesInstanceUID
    (row,) = client.search_for_series(search_filters={"SeriesInstanceUID": series})
    assert row["00201209"]["Value"] == [10]
    assert {i["00080018"]["Value"][0] for i in client.search_for_instances(study, series)} == \
        {ds.SOPInstanceUID for ds in datasets}
    assert client.retrieve_instance(study, series, datasets[3].SOPInstanceUID) == datasets[3]
    assert validate(str(site), keep=False).ok


@pytest.mark.slow
def test_twenty_simultaneous_stows_are_all_stored_and_indexed(writable, sample_dir: Path) -> None:  # type: ignore[no-untyped-def]
    site, url = writable
    posts = [new_series(sample_dir)[:2] for _ in range(20)]
    start = threading.Barrier(20)

    def post(datasets: list[pydicom.Dataset]) -> int:
        body, ctype = multipart_body([part10(ds) for ds in datasets])
        start.wait(60)
        return requests.post(f"{url}/studies", data=body, timeout=300, headers={
            "Content-Type": ctype, "Authorization": f"Bearer {TOKEN}"}).status_code

    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(post, posts))
    assert statuses == [200] * 20
    client = DICOMwebClient(url)
    indexed = {row["0020000E"]["Value"][0]: row["00201209"]["Value"][0]
               for row in client.search_for_series()}
    for datasets in posts:
        assert indexed.get(datasets[0].SeriesInstanceUID) == 2
        study, series = datasets[0].StudyInstanceUID, datasets[0].SeriesInstanceUID
        for ds in datasets:
            assert client.retrieve_instance(study, series, ds.SOPInstanceUID) == ds
    assert validate(str(site), keep=False).ok


def test_a_uid_of_another_series_is_a_conflict(writable, sample_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """An SOP Instance UID already in the site, posted in another series: 409, nothing replaced."""
    site, url = writable
    ds = pydicom.dcmread(sample_files(sample_dir)[0])
    before = LocalStore(site).get(keys.instance_metadata(ds.StudyInstanceUID, ds.SeriesInstanceUID,
                                                         ds.SOPInstanceUID).key)
    ds.SeriesInstanceUID = generate_uid()
    body, ctype = multipart_body([part10(ds)])
    resp = requests.post(f"{url}/studies", data=body, timeout=60,
                         headers={"Content-Type": ctype, "Authorization": f"Bearer {TOKEN}"})
    assert resp.status_code == 409
    (failed,) = resp.json()["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [0x0110]
    assert failed["00081155"]["Value"] == [ds.SOPInstanceUID]
    client = DICOMwebClient(url)
    assert not client.search_for_series(search_filters={"SeriesInstanceUID": ds.SeriesInstanceUID})
    assert LocalStore(site).get(keys.instance_metadata(
        ds.StudyInstanceUID, pydicom.dcmread(sample_files(sample_dir)[0]).SeriesInstanceUID,
        ds.SOPInstanceUID).key) == before


def test_a_request_without_parts_is_400(writable) -> None:  # type: ignore[no-untyped-def]
    _, url = writable
    resp = requests.post(f"{url}/studies", data=b"--stow-test--\r\n", timeout=30, headers={
        "Content-Type": 'multipart/related; type="application/dicom"; boundary=stow-test',
        "Authorization": f"Bearer {TOKEN}"})
    assert resp.status_code == 400


@pytest.mark.parametrize("content_type", [
    "application/dicom", "multipart/related; boundary=x", 'multipart/related; type="image/jpeg"; boundary=x',
    "", 'multipart/mixed; type="application/dicom"; boundary=x'])
def test_other_media_types_are_refused_before_the_body(writable, content_type: str) -> None:  # type: ignore[no-untyped-def]
    _, url = writable
    resp = requests.post(f"{url}/studies", data=b"x", timeout=30, headers={
        "Content-Type": content_type, "Authorization": f"Bearer {TOKEN}"})
    assert resp.status_code == 415


# -- multipart.locate: a body in a file ---------------------------------------------------------------

@pytest.mark.parametrize("window", [7, 64, 1 << 20])
def test_locate_finds_the_parts_of_a_spooled_body(window: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(multipart, "WINDOW", window)  # delimiters across window edges too
    payloads = [b"first", b"", b"\r\n--stow-tes\r\n", bytes(range(256)) * 5, b"last\r\n"]
    body, ctype = multipart_body(payloads)
    for spooled in (b"\r\n" + body + b"epilogue", body):  # dicomweb-client sends a CRLF preamble
        fh = io.BytesIO(spooled)
        parts = multipart.locate(fh, ctype)
        assert [p.read(fh) for p in parts] == payloads
        assert all(p.headers == {"content-type": "application/dicom"} for p in parts)
        assert [(h, d) for h, d in multipart.split(spooled, ctype)] == \
            [(p.headers, p.read(fh)) for p in parts]


@pytest.mark.parametrize("body", [
    b"", b"garbage", b"--other\r\nContent-Type: a/b\r\n\r\nx\r\n--other--\r\n",
    b"--abcXX\r\nContent-Type: a/b\r\n\r\nx\r\n--abc--\r\n",
    b"--abc\r\nContent-Type: a/b\r\n\r\nnever closed",
    b"--abc\r\nContent-Type: a/b\r\nx\r\n--abc--\r\n", b"--abc\r\nContent-Type: a/b\r\n\r\nx\r\n--abc",
])
def test_locate_refuses_what_split_refuses(body: bytes) -> None:
    with pytest.raises(ValueError):
        multipart.split(body, "multipart/related; boundary=abc")
    with pytest.raises(ValueError):
        multipart.locate(io.BytesIO(body), "multipart/related; boundary=abc")
