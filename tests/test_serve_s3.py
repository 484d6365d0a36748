"""``serve s3://bucket/prefix``: the local stand-in for CloudFront, against moto's S3 server over HTTP."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from static_dicomweb.convert import convert
from static_dicomweb.s3store import S3Store
from static_dicomweb.serve import serve_in_thread
from static_dicomweb.store import LocalStore

from .test_s3 import moto_endpoint  # noqa: F401  (the moto server fixture)
from .test_serve_limits import served_url
from .test_stow import TOKEN, multipart_body, new_series, part10

pytestmark = pytest.mark.integration
SITE = "s3://served-site/dicomweb"


@pytest.fixture(scope="module")
def moto(moto_endpoint: str) -> str:  # noqa: F811
    """moto's S3 server (test_s3's fixture), and credentials it takes."""
    return moto_endpoint


@pytest.fixture(scope="module")
def s3_site(moto: str, sample_dir: Path) -> S3Store:
    store = S3Store(SITE, endpoint_url=moto)
    store.client.create_bucket(Bucket=store.bucket)
    result = convert([sample_dir], store)
    assert result.ok, result.rejected
    return store


@pytest.fixture(scope="module")
def s3_url(s3_site: S3Store, moto: str) -> Iterator[str]:
    server, url = serve_in_thread(SITE, endpoint_url=moto, stow_token=TOKEN)
    yield url
    server.shutdown()
    server.server_close()


def raw(url: str, headers: dict[str, str] | None = None) -> requests.Response:
    response = requests.get(url, stream=True, timeout=30, headers=headers or {})
    response._content = response.raw.read(decode_content=False)
    return response


def test_every_key_answers_as_from_the_folder(s3_url: str, site_dir: Path, site_url: str) -> None:
    """The same input converted to a folder and to S3: serve answers each key alike from both."""
    folder = LocalStore(site_dir)
    keys = sorted(folder.walk())
    assert len(keys) > 20
    for key in keys:
        if key.startswith("_site/"):
            continue  # reports and the manifest carry times
        from_s3, from_folder = raw(f"{s3_url}/{key}"), raw(f"{site_url}/{key}")
        assert from_s3.status_code == 200, key
        assert from_s3.content == from_folder.content, key
        for name in ("Content-Type", "Content-Encoding", "Cache-Control", "Content-Length"):
            assert from_s3.headers.get(name) == from_folder.headers.get(name), (key, name)


@pytest.mark.parametrize("query", ["studies", "series?Modality=CT", "series?Modality=XX",
                                   "studies?offset=100", "nothing/here"])
def test_queries_route_as_on_the_folder(s3_url: str, site_url: str, query: str) -> None:
    from_s3, from_folder = raw(f"{s3_url}/{query}"), raw(f"{site_url}/{query}")
    assert (from_s3.status_code, from_s3.content) == (from_folder.status_code, from_folder.content)


def test_ranges_and_head_on_s3(s3_url: str, site_dir: Path) -> None:
    key = "studies"
    stored = LocalStore(site_dir).get(key)
    part = raw(f"{s3_url}/{key}", {"Range": "bytes=2-9"})
    assert (part.status_code, part.content) == (206, stored[2:10])
    head = requests.head(f"{s3_url}/{key}", timeout=30)
    assert head.headers["Content-Length"] == str(len(stored))


def test_stow_into_an_s3_site(s3_url: str, s3_site: S3Store, sample_dir: Path) -> None:
    datasets = new_series(sample_dir)
    client = DICOMwebClient(s3_url, headers={"Authorization": f"Bearer {TOKEN}"})
    response = client.store_instances(datasets)
    assert len(response.ReferencedSOPSequence) == 3
    study, series = datasets[0].StudyInstanceUID, datasets[0].SeriesInstanceUID
    (row,) = client.search_for_series(search_filters={"SeriesInstanceUID": series})
    assert row["00201209"]["Value"] == [3]
    assert client.retrieve_instance(study, series, datasets[1].SOPInstanceUID) == datasets[1]
    assert s3_site.headers(f"studies/{study}/series/{series}/metadata") is not None
    body, ctype = multipart_body([part10(datasets[0])])
    refused = requests.post(f"{s3_url}/studies", data=body, headers={"Content-Type": ctype}, timeout=30)
    assert refused.status_code == 401


def test_cli_serves_an_s3_site(s3_site: S3Store, moto: str, tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "static_dicomweb", "serve", SITE, "--endpoint-url",
                                 moto, "--port", "0"], stderr=out)
    try:
        url = served_url(proc, log)
        assert requests.get(f"{url}/studies", timeout=30).json()
    finally:
        proc.terminate()
        proc.wait(60)


def test_cli_names_a_missing_bucket(moto: str) -> None:
    out = subprocess.run([sys.executable, "-m", "static_dicomweb", "serve", "s3://no-such-bucket/x",
                          "--endpoint-url", moto, "--port", "0"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 3
    assert "s3://no-such-bucket/x" in out.stderr
