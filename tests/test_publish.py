"""``publish``: a site folder onto moto's S3 server over HTTP, answering exactly like the folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from static_dicomweb import keys
from static_dicomweb.publish import WAVES, publish, wave_of
from static_dicomweb.s3store import S3Store
from static_dicomweb.store import LocalStore, open_store

from .test_s3 import assert_answers_alike, moto_endpoint  # noqa: F401  (the moto server fixture)

pytestmark = pytest.mark.integration
EXE = str(Path(sys.executable).with_name("static-dicomweb"))


def public_bucket(endpoint: str, bucket: str) -> S3Store:
    store = S3Store(f"s3://{bucket}/site", endpoint_url=endpoint)
    store.client.create_bucket(Bucket=bucket)
    store.client.put_bucket_policy(Bucket=bucket, Policy=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                       "Resource": f"arn:aws:s3:::{bucket}/*"}]}))
    return store


def cli(*args: str, endpoint: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, *args, "--endpoint-url", endpoint], capture_output=True, text=True,
                          check=False, timeout=300, env={**os.environ})


def test_published_site_answers_every_key_like_the_folder(site_dir: Path, site_url: str,
                                                          moto_endpoint: str) -> None:  # noqa: F811
    dest = public_bucket(moto_endpoint, "published")
    first = cli("publish", str(site_dir), dest.url, endpoint=moto_endpoint)
    assert first.returncode == 0, first.stderr
    folder_keys = sorted(LocalStore(site_dir).walk())
    assert f"{len(folder_keys)} objects uploaded" in first.stderr
    assert sorted(dest.walk()) == folder_keys
    assert_answers_alike(f"{moto_endpoint}/{dest.bucket}/{dest.prefix}", site_url, folder_keys)
    again = cli("publish", str(site_dir), dest.url, endpoint=moto_endpoint)
    assert again.returncode == 0, again.stderr
    assert f"0 objects uploaded (0.0 MB), {len(folder_keys)} already there" in again.stderr
    checked = cli("validate", dest.url, "--no-decode", endpoint=moto_endpoint)
    assert checked.returncode == 0, checked.stderr
    assert "conforms" in checked.stderr
    assert dest.headers("_site/validation-report.json") is not None  # kept in the S3 site


def test_serve_of_a_published_site_passes_the_strict_read_back(site_dir: Path, sample_dir: Path,
                                                               moto_endpoint: str) -> None:  # noqa: F811
    from static_dicomweb.serve import serve_in_thread

    from .test_clients import check_site_round_trip

    dest = public_bucket(moto_endpoint, "served")
    publish(LocalStore(site_dir), dest)
    server, url = serve_in_thread(dest.url, endpoint_url=moto_endpoint)
    try:
        check_site_round_trip(sample_dir, url)
    finally:
        server.shutdown()
        server.server_close()


def test_publish_resumes_and_deletes_only_when_asked(site_dir: Path, moto_endpoint: str) -> None:  # noqa: F811
    dest = public_bucket(moto_endpoint, "resumed")
    site = LocalStore(site_dir)
    publish(site, dest)
    lost = [*sorted(k for k in dest.walk() if k.endswith("/frames/1"))[:3], keys.manifest().key]
    for key in lost:  # as if a run had been killed before these
        dest.delete(key)
    dest.put(keys.ObjectSpec("_site/stray.json", "application/json"), [b"{}"])
    result = publish(site, dest)
    assert sorted(result.uploaded) == sorted(lost)
    assert dest.headers("_site/stray.json") is not None  # nothing deleted unless asked
    result = publish(site, dest, delete=True)
    assert result.uploaded == [] and result.deleted == ["_site/stray.json"]
    assert sorted(dest.walk()) == sorted(site.walk())


def test_objects_go_up_before_the_indexes_that_list_them(site_dir: Path, moto_endpoint: str) -> None:  # noqa: F811
    dest = public_bucket(moto_endpoint, "ordered")
    order: list[str] = []

    def record(params: dict[str, str], **_: object) -> None:
        order.append(params["Key"].removeprefix(f"{dest.prefix}/"))

    for event in ("PutObject", "CreateMultipartUpload"):
        dest.client.meta.events.register(f"provide-client-params.s3.{event}", record)
    publish(LocalStore(site_dir), dest)
    order = [k for k in order if k != "_site/writer-lock.json"]
    assert order[-1] == keys.manifest().key
    waves = [wave_of(k) for k in order]
    assert waves == sorted(waves), "a wave started before the previous one finished"
    first_index = order.index("studies")
    assert all(wave_of(k) == WAVES.index("instances") for k in order[:10])
    # every instance object (wave 0) before the root index, whatever order a wave's threads ran in
    assert all(k in order[:first_index] for k in order if wave_of(k) == WAVES.index("instances"))


def test_publish_refuses_what_is_not_a_site(tmp_path: Path, moto_endpoint: str) -> None:  # noqa: F811
    (tmp_path / "empty").mkdir()
    public_bucket(moto_endpoint, "refused")
    done = cli("publish", str(tmp_path / "empty"), "s3://refused/x", endpoint=moto_endpoint)
    assert done.returncode == 3 and "not a site folder" in done.stderr
    done = cli("publish", str(tmp_path / "missing"), "s3://refused/x", endpoint=moto_endpoint)
    assert done.returncode == 3 and "no such site folder" in done.stderr
    assert list(open_store("s3://refused/x", endpoint_url=moto_endpoint).walk()) == []
