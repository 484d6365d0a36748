"""STOW-RS write-back: `serve --stow-token` and the Lambda handler, with the real dicomweb-client."""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from static_dicomweb import keys
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
