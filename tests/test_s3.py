"""The S3 store against moto's S3 server over real HTTP: parity with a folder, every key."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from static_dicomweb.convert import convert
from static_dicomweb.s3store import S3Store
from static_dicomweb.store import LocalStore
from static_dicomweb.validate import validate

pytestmark = pytest.mark.integration
COMPARED_HEADERS = ("Content-Type", "Content-Encoding", "Cache-Control")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    port = free_port()
    exe = str(Path(sys.executable).with_name("moto_server"))
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(url, timeout=2)
            break
        except requests.ConnectionError:
            assert proc.poll() is None and time.monotonic() < deadline, "moto_server did not start"
            time.sleep(0.2)
    old = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                          "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION="us-east-1")
    yield url
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def s3_site(moto_endpoint: str, sample_dir: Path) -> S3Store:
    store = S3Store("s3://nlst-site/dicomweb", endpoint_url=moto_endpoint)
    store.client.create_bucket(Bucket="nlst-site")
    # a static site is read without credentials (CloudFront in production): public GETs here
    store.client.put_bucket_policy(Bucket="nlst-site", Policy=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                       "Resource": "arn:aws:s3:::nlst-site/*"}]}))
    result = convert([sample_dir], store, workers=2)
    assert result.ok, result.rejected
    return store


def raw_get(url: str) -> requests.Response:
    resp = requests.get(url, stream=True, timeout=30)
    resp.raw.decode_content = False
    resp._content = resp.raw.read()  # the bytes as stored, gzip included
    return resp


def assert_answers_alike(base: str, reference: str, site_keys: list[str],
                         headers: tuple[str, ...] = COMPARED_HEADERS) -> None:
    """Every key answers 200 at ``base`` with the bytes (gzip as stored) and headers of ``reference``."""
    for key in site_keys:
        mine, theirs = raw_get(f"{base}/{key}"), raw_get(f"{reference}/{key}")
        assert mine.status_code == theirs.status_code == 200, key
        assert mine.content == theirs.content, key
        for name in headers:
            assert mine.headers.get(name) == theirs.headers.get(name), (key, name)


def test_every_key_answers_alike_from_s3_and_folder(s3_site: S3Store, site_dir: Path,
                                                    site_url: str, moto_endpoint: str) -> None:
    folder_keys = sorted(LocalStore(site_dir).walk())
    assert sorted(s3_site.walk()) == folder_keys
    assert_answers_alike(f"{moto_endpoint}/{s3_site.bucket}/{s3_site.prefix}", site_url, folder_keys)


def test_s3_site_validates_over_http(s3_site: S3Store, moto_endpoint: str) -> None:
    report = validate(f"{moto_endpoint}/{s3_site.bucket}/{s3_site.prefix}", decode_frames=False)
    assert report.ok, report.findings


def test_rerun_on_s3_keeps_every_object(s3_site: S3Store, sample_dir: Path) -> None:
    before = {k: s3_site.get(k) for k in s3_site.walk()}
    result = convert([sample_dir], s3_site)
    assert result.ok
    after = {k: s3_site.get(k) for k in s3_site.walk()}
    assert after == before


def test_large_objects_go_up_in_parts(s3_site: S3Store) -> None:
    from static_dicomweb import keys
    from static_dicomweb.store import Slice

    body = bytes(range(256)) * 40_000  # 10 MB: two parts
    s3_site.put(keys.ObjectSpec("_site/test/big", "application/octet-stream"), [body])
    s3_site.put(keys.ObjectSpec("_site/test/copy", "application/octet-stream"),
                [b"head", Slice("_site/test/big", 10, 20), b"tail"])
    assert s3_site.get("_site/test/big") == body
    assert s3_site.get("_site/test/copy") == b"head" + body[10:-20] + b"tail"


def test_cli_converts_to_s3_and_names_s3_errors(moto_endpoint: str, tmp_path: Path) -> None:
    exe = str(Path(sys.executable).with_name("static-dicomweb"))
    env = {**os.environ, "AWS_ENDPOINT_URL": moto_endpoint}
    subprocess.run([exe, "sample", str(tmp_path / "in"), "--slices", "2", "--rows", "32",
                    "--patients", "1"], check=True, env=env)
    S3Store("s3://cli-site", endpoint_url=moto_endpoint).client.create_bucket(Bucket="cli-site")
    ok = subprocess.run([exe, "convert", str(tmp_path / "in"), "--out", "s3://cli-site/x"],
                        capture_output=True, text=True, env=env, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "s3://cli-site/x" in ok.stderr
    missing = subprocess.run([exe, "convert", str(tmp_path / "in"), "--out", "s3://no-such-bucket/x",
                              "--endpoint-url", moto_endpoint],
                             capture_output=True, text=True, env=env, check=False)
    assert missing.returncode == 3
    assert "S3" in missing.stderr and "NoSuchBucket" in missing.stderr
