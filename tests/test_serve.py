"""Tests for the HTTP server of a site folder (static_dicomweb.serve)."""

from __future__ import annotations

import gzip
import http.client
import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from static_dicomweb import keys
from static_dicomweb.dicomjson import encode, gzip_bytes
from static_dicomweb.errors import StoreError
from static_dicomweb.multipart import join, single
from static_dicomweb.serve import make_server, serve_in_thread
from static_dicomweb.store import LocalStore

pytestmark = pytest.mark.integration

STUDY, SERIES, SOP = "1.2.3", "1.2.3.4", "1.2.3.4.5"
STUDIES_JSON = [{"0020000D": {"vr": "UI", "Value": [STUDY]}}]
P10 = b"\x00" * 128 + b"DICM" + bytes(range(256)) * 4
SECRET = b"TOP SECRET outside the site root"


class Site:
    """A site written in the test, served on a free port."""

    def __init__(self, root: Path, url: str) -> None:
        self.root = root
        self.url = url
        split = urlsplit(url)
        self.host, self.port = split.hostname or "", split.port or 0
        self.store = LocalStore(root)

    def raw(self, method: str, path: str, headers: dict[str, str] | None = None
            ) -> tuple[http.client.HTTPResponse, bytes]:
        """One request with the path sent exactly as given (no client normalisation)."""
        return raw_request(self.host, self.port, method, path, headers)


def raw_request(host: str, port: int, method: str, path: str, headers: dict[str, str] | None = None,
                timeout: float = 10) -> tuple[http.client.HTTPResponse, bytes]:
    """One request with the path sent exactly as given (no client normalisation)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("serve")
    root = base / "site"
    root.mkdir()
    store = LocalStore(root)
    store.put(keys.studies(), [gzip_bytes(encode(STUDIES_JSON))])
    store.put(keys.instance(STUDY, SERIES, SOP),
              single(keys.instance(STUDY, SERIES, SOP), "application/dicom", P10))
    store.put(keys.series_metadata(STUDY, SERIES), [gzip_bytes(encode([{}]))])
    store.put(keys.study_thumbnail(STUDY), [b"\xff\xd8 not really a jpeg \xff\xd9"])
    store.put(keys.ObjectSpec("_site/empty.json", "application/json", cache_control=keys.INDEX), [b""])
    # a file that looks like an object but lies outside the root
    (base / "secret.body").write_bytes(SECRET)
    (base / "secret.head.json").write_text(json.dumps({"Content-Type": "text/plain"}))
    (base / "etc").mkdir()
    (base / "etc" / "passwd.body").write_bytes(SECRET)
    (base / "etc" / "passwd.head.json").write_text(json.dumps({"Content-Type": "text/plain"}))
    server, url = serve_in_thread(str(root))
    try:
        yield Site(root, url)
    finally:
        server.shutdown()
        server.server_close()


def assert_cors(headers: http.client.HTTPMessage | requests.structures.CaseInsensitiveDict[str]) -> None:
    assert headers["Access-Control-Allow-Origin"] == "*"


# -- GET -------------------------------------------------------------------

def test_get_gzip_json_bytes_as_stored(site: Site) -> None:
    stored = site.store.get("studies")
    response = requests.get(f"{site.url}/studies", stream=True, timeout=10)
    body = response.raw.read(decode_content=False)
    assert response.status_code == 200
    assert body == stored
    assert body[:2] == b"\x1f\x8b"
    assert response.headers["Content-Type"] == "application/dicom+json"
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.headers["Cache-Control"] == keys.INDEX
    assert response.headers["Content-Length"] == str(len(stored))
    assert response.headers["ETag"].startswith('"') and response.headers["ETag"].endswith('"')
    assert_cors(response.headers)


def test_get_gzip_json_decoded_by_client(site: Site) -> None:
    response = requests.get(f"{site.url}/studies", timeout=10)
    assert response.json() == STUDIES_JSON


def test_get_raw_with_http_client(site: Site) -> None:
    response, body = site.raw("GET", "/studies")
    assert response.status == 200
    assert gzip.decompress(body) == encode(STUDIES_JSON)
    assert response.getheader("Content-Encoding") == "gzip"


def test_get_multipart_instance(site: Site) -> None:
    spec = keys.instance(STUDY, SERIES, SOP)
    response = requests.get(f"{site.url}/{spec.key}", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == spec.content_type
    assert "Content-Encoding" not in response.headers
    assert response.headers["Cache-Control"] == keys.IMMUTABLE
    assert response.content == join(single(spec, "application/dicom", P10))


def test_get_thumbnail_and_empty_object(site: Site) -> None:
    response = requests.get(f"{site.url}/studies/{STUDY}/thumbnail", timeout=10)
    assert response.headers["Content-Type"] == "image/jpeg"
    assert response.content == site.store.get(f"studies/{STUDY}/thumbnail")
    empty = requests.get(f"{site.url}/_site/empty.json", timeout=10)
    assert (empty.status_code, empty.content, empty.headers["Content-Length"]) == (200, b"", "0")


def test_etag_is_stable(site: Site) -> None:
    first = requests.head(f"{site.url}/studies", timeout=10).headers["ETag"]
    again = requests.get(f"{site.url}/studies", timeout=10).headers["ETag"]
    other = requests.head(f"{site.url}/studies/{STUDY}/thumbnail", timeout=10).headers["ETag"]
    assert first == again != other


def test_query_string_is_ignored(site: Site) -> None:
    plain = requests.get(f"{site.url}/studies", stream=True, timeout=10)
    # parameters the routing table does not know are ignored (S3 ignores them all)
    queried = requests.get(f"{site.url}/studies?includefield=all&fuzzymatching=false", stream=True,
                           timeout=10)
    assert queried.status_code == 200
    assert queried.raw.read(decode_content=False) == plain.raw.read(decode_content=False)
    assert queried.headers["Content-Type"] == plain.headers["Content-Type"]


def test_percent_encoded_path_is_decoded(site: Site) -> None:
    response, body = site.raw("GET", "/studies/1%2E2%2E3/thumbnail")
    assert response.status == 200
    assert body == site.store.get(f"studies/{STUDY}/thumbnail")


def test_keep_alive_serves_several_requests(site: Site) -> None:
    conn = http.client.HTTPConnection(site.host, site.port, timeout=10)
    try:
        for _ in range(3):
            conn.request("GET", "/studies")
            response = conn.getresponse()
            assert response.status == 200
            assert response.read() == site.store.get("studies")
    finally:
        conn.close()


def test_keep_alive_requests_are_not_delayed(site: Site) -> None:
    conn = http.client.HTTPConnection(site.host, site.port, timeout=10)
    try:
        conn.request("GET", "/studies")
        conn.getresponse().read()
        started = time.monotonic()
        for _ in range(10):
            conn.request("GET", "/studies")
            conn.getresponse().read()
        elapsed = time.monotonic() - started
    finally:
        conn.close()
    assert elapsed < 0.2, f"10 keep-alive requests took {elapsed:.3f} s"


# -- HEAD and OPTIONS ------------------------------------------------------

def test_head_gives_headers_without_body(site: Site) -> None:
    response, body = site.raw("HEAD", "/studies")
    got, _ = site.raw("GET", "/studies")
    assert response.status == 200
    assert body == b""
    for name in ("Content-Type", "Content-Encoding", "Cache-Control", "Content-Length", "ETag"):
        assert response.getheader(name) == got.getheader(name), name
    assert response.getheader("Content-Length") == str(len(site.store.get("studies")))
    assert_cors(response.headers)


def test_options_preflight(site: Site) -> None:
    response, body = site.raw("OPTIONS", f"/studies/{STUDY}/series/{SERIES}/metadata", {
        "Origin": "http://viewer.example", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "accept"})
    assert response.status == 204
    assert body == b""
    assert response.getheader("Access-Control-Allow-Origin") == "*"
    assert "GET" in response.getheader("Access-Control-Allow-Methods", "")
    assert response.getheader("Access-Control-Allow-Headers") == "*"
    exposed = response.getheader("Access-Control-Expose-Headers", "")
    assert "Content-Encoding" in exposed and "ETag" in exposed


# -- missing and forbidden -------------------------------------------------

def test_missing_key_is_404_no_such_key(site: Site) -> None:
    response = requests.get(f"{site.url}/studies/9.9.9/metadata", timeout=10)
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/xml"
    assert "<Code>NoSuchKey</Code>" in response.text
    assert "<Key>studies/9.9.9/metadata</Key>" in response.text
    assert_cors(response.headers)


def test_missing_key_head_is_404_without_body(site: Site) -> None:
    response, body = site.raw("HEAD", "/nothing")
    assert response.status == 404
    assert body == b""


@pytest.mark.parametrize("path", [
    "/", "/studies/", f"/studies/{STUDY}", f"/studies/{STUDY}/series/{SERIES}", "/studies.body",
    "/studies.head.json", "/studies//", f"/studies/{STUDY}/series/{SERIES}/instances/",
])
def test_folders_and_internal_names_are_404(site: Site, path: str) -> None:
    response, body = site.raw("GET", path)
    assert response.status == 404
    assert b"NoSuchKey" in body


@pytest.mark.parametrize("path", [
    "/../secret", "/../../etc/passwd", "/../etc/passwd", "/%2e%2e/secret", "/%2E%2E/%2e%2e/etc/passwd",
    "/studies/..%2f..%2fsecret", "/..%2Fsecret", "/studies/../../secret", "/./../secret",
    "/%2fetc/passwd", "//etc/passwd", "/..\\secret", "/..%5csecret",
])
def test_path_traversal_is_404(site: Site, path: str) -> None:
    response, body = site.raw("GET", path)
    assert response.status == 404
    assert SECRET not in body
    assert b"NoSuchKey" in body


def test_nul_in_path_is_404(site: Site) -> None:
    response, _ = site.raw("GET", "/studies%00")
    assert response.status == 404


def test_not_found_body_is_well_formed_xml(site: Site) -> None:
    response, body = site.raw("GET", "/%3Cb%3Ex&y")
    assert response.status == 404
    error = ET.fromstring(body)
    assert error.findtext("Key") == "<b>x&y"


# -- ranges ----------------------------------------------------------------

def test_range_first_ten_bytes(site: Site) -> None:
    stored = site.store.get("studies")
    response, body = site.raw("GET", "/studies", {"Range": "bytes=0-9"})
    assert response.status == 206
    assert body == stored[:10]
    assert response.getheader("Content-Length") == "10"
    assert response.getheader("Content-Range") == f"bytes 0-9/{len(stored)}"
    assert response.getheader("Content-Encoding") == "gzip"


def test_range_open_ended_and_suffix(site: Site) -> None:
    key = keys.instance(STUDY, SERIES, SOP).key
    stored = site.store.get(key)
    size = len(stored)
    response, body = site.raw("GET", f"/{key}", {"Range": "bytes=100-"})
    assert (response.status, body) == (206, stored[100:])
    assert response.getheader("Content-Range") == f"bytes 100-{size - 1}/{size}"
    response, body = site.raw("GET", f"/{key}", {"Range": "bytes=-20"})
    assert (response.status, body) == (206, stored[-20:])
    assert response.getheader("Content-Range") == f"bytes {size - 20}-{size - 1}/{size}"
    response, body = site.raw("GET", f"/{key}", {"Range": f"bytes=10-{size + 1000}"})
    assert (response.status, body) == (206, stored[10:])


def test_range_not_satisfiable(site: Site) -> None:
    size = len(site.store.get("studies"))
    response, body = site.raw("GET", "/studies", {"Range": f"bytes={size}-"})
    assert response.status == 416
    assert response.getheader("Content-Range") == f"bytes */{size}"
    assert body == b""


def test_unparsable_range_is_ignored(site: Site) -> None:
    response, body = site.raw("GET", "/studies", {"Range": "items=0-9"})
    assert response.status == 200
    assert body == site.store.get("studies")


# -- server construction ----------------------------------------------------

def test_make_server_refuses_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no such site folder"):
        make_server(str(tmp_path / "nope"), port=0)


# -- the converted sample site -------------------------------------------------

def test_every_object_of_converted_site_served_as_stored(site_dir: Path, site_url: str) -> None:
    store = LocalStore(site_dir)
    all_keys = list(store.walk())
    assert len(all_keys) > 20
    for key in all_keys:
        # a fresh connection each time: see test_keep_alive_requests_are_not_delayed
        response = requests.get(f"{site_url}/{key}", stream=True, timeout=10)
        assert response.status_code == 200, key
        assert response.raw.read(decode_content=False) == store.get(key), key
        headers = store.headers(key)
        assert headers is not None
        for name, value in headers.items():
            assert response.headers[name] == value, (key, name)
