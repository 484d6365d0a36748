"""nginx with the configuration of ``static-dicomweb nginx-config``: a real nginx (Debian's, with njs).

nginx listens on a socket this test binds to port 0 and hands over (nginx
takes inherited listening sockets from the ``NGINX`` environment variable), so
no fixed port is used.  The site is a copy of the session's converted sample
site (a folder site survives ``cp -r``), served by ``serve`` beside nginx for
the comparisons.
"""

from __future__ import annotations

import gzip
import http.client
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_file

from static_dicomweb import keys, routing
from static_dicomweb.cli import main
from static_dicomweb.convert import convert
from static_dicomweb.multipart import single
from static_dicomweb.nginx import CONF_FILE, NginxConfigError, NginxOptions, config, write
from static_dicomweb.serve import CORS, serve_in_thread
from static_dicomweb.store import LocalStore
from static_dicomweb_sample import SampleSpec, generate_sample

from . import test_queries
from .test_clients import REAL_FILES, check_series_round_trip, check_site_round_trip
from .test_serve import raw_request

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "nginx.sh"
TOKEN = "nginx-stow-token"
SECRET = b"TOP SECRET outside the site root"
#: Headers that name the server, the time or the file's inode and date: not the object's.
_OWN = {"date", "server", "etag", "last-modified", "connection", "keep-alive"}


@pytest.fixture(scope="session")
def nginx_binary() -> str:
    out = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=900,
                         check=False, stdin=subprocess.DEVNULL)
    if out.returncode == 77:
        pytest.skip(f"nginx with njs is not installed and cannot be here: {out.stderr.strip()}")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


class Nginx:
    """nginx in the foreground on ``site``, from a prefix of its own."""

    def __init__(self, binary: str, site: Path, prefix: Path, upstream: str | None = None,
                 run_as: int | None = None, stdio_logs: bool = False, buffer_stow: bool = False) -> None:
        listener = socket.create_server(("127.0.0.1", 0))
        self.port = listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.prefix = prefix
        # as root nginx's workers would run as nobody, who cannot enter pytest's 0700 folders
        user = "root" if os.geteuid() == 0 and run_as is None else None
        conf = write(NginxOptions(site=str(site), listen=f"127.0.0.1:{self.port}", upstream=upstream,
                                  user=user, workers="1", stdio_logs=stdio_logs, buffer_stow=buffer_stow),
                     prefix)
        self.log = (prefix / "stderr.log").open("wb")
        fd = listener.fileno()
        self.proc = subprocess.Popen([binary, "-p", str(prefix), "-c", str(conf)], pass_fds=(fd,),
                                     env={**os.environ, "NGINX": f"{fd};"}, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT, user=run_as,
                                     group=None if run_as is None else run_as,
                                     extra_groups=None if run_as is None else [])
        listener.close()  # nginx holds it now; a connection waits in its backlog until it accepts

    def raw(self, method: str, path: str, headers: dict[str, str] | None = None
            ) -> tuple[http.client.HTTPResponse, bytes]:
        return raw(self.port, method, path, headers)

    def stop(self, graceful: bool = False) -> None:
        self.proc.send_signal(signal.SIGQUIT if graceful else signal.SIGTERM)
        self.proc.wait(timeout=60)
        self.log.close()


def raw(port: int, method: str, path: str, headers: dict[str, str] | None = None
        ) -> tuple[http.client.HTTPResponse, bytes]:
    """One request with the path sent exactly as given (no client normalisation)."""
    return raw_request("127.0.0.1", port, method, path, headers, timeout=60)


@pytest.fixture(scope="module")
def served(nginx_binary: str, site_dir: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Nginx, str, Path]]:
    """nginx and ``serve`` (with STOW) on one copy of the sample site; nginx forwards STOW to serve."""
    base = tmp_path_factory.mktemp("nginx")
    site = base / "site"
    shutil.copytree(site_dir, site)
    (base / "secret.body").write_bytes(SECRET)
    server, serve_url = serve_in_thread(str(site), stow_token=TOKEN)
    nginx = Nginx(nginx_binary, site, base / "prefix", upstream=serve_url)
    try:
        yield nginx, serve_url, site
    finally:
        nginx.stop()
        server.shutdown()
        server.server_close()


def _answer(port: int, method: str, path: str, headers: dict[str, str] | None = None
            ) -> tuple[int, bytes, list[tuple[str, str]]]:
    """Status, body and headers (every line, so a header sent twice shows) less the server's own."""
    response, body = raw(port, method, path, headers)
    own = sorted((name.lower(), value) for name, value in response.getheaders() if name.lower() not in _OWN)
    return response.status, body, own


# -- the configuration ---------------------------------------------------------

def test_nginx_t_accepts_the_printed_config(nginx_binary: str, site_dir: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    args = ["nginx-config", str(site_dir), "--listen", "127.0.0.1:8080", "--upstream",
            "http://127.0.0.1:8081"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    assert main(args) == 0
    assert capsys.readouterr().out == (tmp_path / CONF_FILE).read_text()
    out = subprocess.run([nginx_binary, "-t", "-p", str(tmp_path), "-c", str(tmp_path / CONF_FILE)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert "test is successful" in out.stderr
    # everything nginx wrote lies under its prefix
    assert (tmp_path / "error.log").exists() and (tmp_path / "client_body_temp").is_dir()


def test_runs_in_its_prefix_as_an_unprivileged_user(nginx_binary: str, site_dir: Path) -> None:
    """No file of nginx's own (pid, logs, temp) outside the prefix: a user who can write nothing else."""
    if os.geteuid() != 0:
        pytest.skip("needs root to become another user (the other tests run nginx as this user)")
    nobody = 65534
    with tempfile.TemporaryDirectory(prefix="sdw-nginx-") as tmp:
        base = Path(tmp)
        base.chmod(0o755)
        shutil.copytree(site_dir, base / "site")
        (base / "prefix").mkdir()
        os.chown(base / "prefix", nobody, nobody)
        nginx = Nginx(nginx_binary, base / "site", base / "prefix", run_as=nobody)
        try:
            response, body = nginx.raw("GET", "/studies")
            assert response.status == 200
            assert body == LocalStore(base / "site").get("studies")
            assert (base / "prefix" / "nginx.pid").read_text().strip() == str(nginx.proc.pid)
        finally:
            nginx.stop()
        written = {p.name for p in (base / "prefix").iterdir()}
        assert written >= {"access.log", "error.log", "client_body_temp"}


def test_stdio_logs(nginx_binary: str, site_dir: Path, tmp_path: Path) -> None:
    nginx = Nginx(nginx_binary, site_dir, tmp_path / "prefix", stdio_logs=True)
    try:
        response, _ = nginx.raw("GET", "/studies?PatientID=stdio-log-check")
        assert response.status == 200
    finally:
        nginx.stop(graceful=True)  # a graceful stop writes out the buffered access log
    output = (tmp_path / "prefix" / "stderr.log").read_text()  # nginx's standard output and error
    assert "GET /studies?PatientID=stdio-log-check HTTP/1.1" in output
    assert not (tmp_path / "prefix" / "access.log").exists()
    assert not (tmp_path / "prefix" / "error.log").exists()


@pytest.mark.parametrize("buffer", [False, True])
def test_stow_bodies_streamed_or_buffered(nginx_binary: str, site_dir: Path, tmp_path: Path,
                                          buffer: bool) -> None:
    options = NginxOptions(site=str(site_dir), listen="127.0.0.1:8080", upstream="http://127.0.0.1:8081",
                           buffer_stow=buffer)
    conf = write(options, tmp_path)
    assert f"proxy_request_buffering {'on' if buffer else 'off'};" in conf.read_text()
    out = subprocess.run([nginx_binary, "-t", "-p", str(tmp_path), "-c", str(conf)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize(("change", "message"), [
    ({"listen": "8080"}, "expected HOST:PORT"),
    ({"listen": "127.0.0.1:0"}, "port from 1"),
    ({"upstream": "http://127.0.0.1:8081/stow"}, "no path"),
    ({"upstream": "ftp://x"}, "expected http"),
    ({"site": "/nonexistent/site"}, "no such site folder"),
    ({"user": "root; daemon on"}, "--user"),
])
def test_bad_arguments_are_refused_by_name(site_dir: Path, change: dict[str, str], message: str) -> None:
    options = {"site": str(site_dir), "listen": "127.0.0.1:8080", **change}
    with pytest.raises(NginxConfigError, match=message):
        config(NginxOptions(**options))


# -- reading through nginx -------------------------------------------------------

def test_strict_read_back_through_nginx(served: tuple[Nginx, str, Path], sample_dir: Path) -> None:
    nginx, _, _ = served
    check_site_round_trip(sample_dir, nginx.url)


def test_qido_filters_and_paging_through_nginx(served: tuple[Nginx, str, Path], sample_dir: Path) -> None:
    nginx, _, _ = served
    test_queries.test_the_four_filters_answer_exactly(sample_dir, nginx.url)
    test_queries.test_paging_ends_with_the_right_count(sample_dir, nginx.url)
    test_queries.test_paging_by_rows_received_ends_for_every_filter(sample_dir, nginx.url)


def _requests(site: Path) -> list[tuple[str, str, dict[str, str]]]:
    """Twenty requests a client makes, over every kind of object and answer."""
    store = LocalStore(site)
    study = store.children("studies/")[0]
    series = store.children(f"studies/{study}/series/")[0]
    instance = store.children(f"studies/{study}/series/{series}/instances/")[0]
    prefix = keys.instance_prefix(study, series, instance)
    multiframe = next(k for k in store.walk("studies/") if k.endswith("/frames/2"))
    rows = json.loads(gzip.decompress(store.get("series")))
    patient = rows[0]["00100020"]["Value"][0]
    return [
        ("GET", "/studies", {}),
        ("GET", "/series", {}),
        ("GET", "/series?" + urlencode({"Modality": "CT"}), {}),
        ("GET", "/studies?" + urlencode({"PatientID": patient}), {}),
        ("GET", "/series?" + urlencode({"SeriesInstanceUID": series}), {}),
        ("GET", "/series?" + urlencode({"StudyInstanceUID": study, "limit": "5"}), {}),
        ("GET", "/studies?" + urlencode({"PatientID": "nobody"}), {}),
        ("GET", "/series?offset=100", {}),
        ("GET", "/series?" + urlencode({"Modality": "CT", "offset": "3"}), {}),
        ("GET", f"/studies/{study}/series", {}),
        ("GET", f"/studies/{study}/series/{series}/metadata", {}),
        ("GET", f"/studies/{study}/series/{series}/instances", {}),
        ("GET", f"/{prefix}/metadata", {}),
        ("GET", f"/{prefix}", {}),
        ("GET", f"/{prefix}/frames/1", {}),
        ("GET", f"/{multiframe}", {}),
        ("GET", f"/studies/{study}/series/{series}", {}),
        ("GET", f"/{prefix}", {"Range": "bytes=10-99"}),
        ("HEAD", "/_site/manifest.json", {}),
        ("GET", f"/studies/{study}/series/9.9.9/metadata", {}),
    ]


def test_twenty_requests_answered_as_serve_answers(served: tuple[Nginx, str, Path]) -> None:
    nginx, serve_url, site = served
    serve_port = int(serve_url.rsplit(":", 1)[1])
    cases = _requests(site)
    assert len(cases) == 20
    for method, path, headers in cases:
        ours = _answer(nginx.port, method, path, headers)
        theirs = _answer(serve_port, method, path, headers)
        assert ours[0] == theirs[0], (path, ours[0], theirs[0])
        assert ours[1] == theirs[1], path
        assert ours[2] == theirs[2], path


def test_every_object_served_with_its_bytes_and_headers(served: tuple[Nginx, str, Path]) -> None:
    nginx, _, site = served
    _check_every_object(nginx, site)


def _check_every_object(nginx: Nginx, site: Path) -> None:
    """Every key of the site: its stored bytes, the store's headers and user metadata, CORS."""
    store = LocalStore(site)
    session = requests.Session()
    count = 0
    for key in store.walk():
        response = session.get(f"{nginx.url}/{key}", stream=True, timeout=30)
        assert response.status_code == 200, key
        assert response.raw.read(decode_content=False) == store.get(key), key
        expected = store.headers(key)
        assert expected is not None
        for name, value in {**expected, **CORS}.items():
            assert response.headers.get(name) == value, (key, name)
        amz = {k.lower() for k in response.headers if k.lower().startswith("x-amz-meta-")}
        assert amz == {k.lower() for k in expected if k.lower().startswith("x-amz-meta-")}, key
        count += 1
    assert count > 50


@pytest.fixture(scope="module")
def real_files_site(nginx_binary: str, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[tuple[Nginx, Path, dict[str, tuple[Path, pydicom.Dataset]]]]:
    """pydicom's and pydicom-data's real files (JPEG 2000, JPEG-LS, RLE, big endian, Enhanced CT, ...)."""
    base = tmp_path_factory.mktemp("nginx-real")
    sources: dict[str, tuple[Path, pydicom.Dataset]] = {}
    for name in REAL_FILES:  # one site: one file per SOP Instance UID (693_* share theirs)
        path = Path(get_testdata_file(name))  # type: ignore[arg-type]
        ds = pydicom.dcmread(path)
        sources.setdefault(ds.SOPInstanceUID, (path, ds))
    result = convert([path for path, _ in sources.values()], LocalStore(base / "site"))
    assert result.ok, result.rejected
    nginx = Nginx(nginx_binary, base / "site", base / "prefix")
    try:
        yield nginx, base / "site", sources
    finally:
        nginx.stop()


def test_real_files_read_back_through_nginx(
        real_files_site: tuple[Nginx, Path, dict[str, tuple[Path, pydicom.Dataset]]]) -> None:
    nginx, _, sources = real_files_site
    client = DICOMwebClient(nginx.url)
    frames = 0
    for row in client.search_for_series():
        frames += check_series_round_trip(client, nginx.url, sources, row["0020000D"]["Value"][0],
                                          row["0020000E"]["Value"][0])
    assert frames == sum(int(ds.get("NumberOfFrames") or 1) for _, ds in sources.values())


def test_real_files_every_object_as_stored(
        real_files_site: tuple[Nginx, Path, dict[str, tuple[Path, pydicom.Dataset]]]) -> None:
    nginx, site, _ = real_files_site
    _check_every_object(nginx, site)


def test_options_preflight(served: tuple[Nginx, str, Path]) -> None:
    nginx, _, _ = served
    response, body = nginx.raw("OPTIONS", "/studies", {"Origin": "http://viewer.example",
                                                       "Access-Control-Request-Method": "GET"})
    assert response.status == 204 and body == b""
    for name, value in CORS.items():
        assert response.getheader(name) == value


# -- routing ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def routing_site(nginx_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    """A site holding every key of the routing cases, each body naming its key."""
    base = tmp_path_factory.mktemp("nginx-routing")
    store = LocalStore(base / "site")
    for key in {case["key"] for case in test_queries.CASES} | {routing.EMPTY_KEY}:
        body = json.dumps([key]).encode()
        if keys.needs_head(key):  # a frame: a multipart body, as the store wants one there
            body = b"".join(single(keys.ObjectSpec(key, ""), "application/octet-stream", body))
        derived = keys.headers_for(key, body)
        spec = keys.ObjectSpec(key, derived["Content-Type"], derived.get("Content-Encoding"),
                               derived["Cache-Control"])
        store.put(spec, [body])
    nginx = Nginx(nginx_binary, base / "site", base / "prefix")
    try:
        yield nginx
    finally:
        nginx.stop()


@pytest.mark.parametrize("case", test_queries.CASES,
                         ids=[f"{c['path']}?{c['query']}" for c in test_queries.CASES])
def test_routing_cases_through_nginx(routing_site: Nginx, case: dict) -> None:  # type: ignore[type-arg]
    query = urlencode(case["query"])
    response, body = routing_site.raw("GET", f"/{case['path']}" + (f"?{query}" if query else ""))
    assert response.status == 200, body
    assert json.dumps([case["key"]]).encode() in body


@pytest.fixture(scope="module")
def paged_site(nginx_binary: str, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[tuple[Nginx, int]]:
    """A study of 150 series: answers with pages of their own (offset 100, and the end at 150)."""
    base = tmp_path_factory.mktemp("nginx-pages")
    test_queries._aggregate_study(LocalStore(base / "site"), "1.2.3", 150, 1)
    server, url = serve_in_thread(str(base / "site"))
    nginx = Nginx(nginx_binary, base / "site", base / "prefix")
    try:
        yield nginx, int(url.rsplit(":", 1)[1])
    finally:
        nginx.stop()
        server.shutdown()
        server.server_close()


def test_pages_through_nginx(paged_site: tuple[Nginx, int]) -> None:
    nginx, serve_port = paged_site
    client = DICOMwebClient(nginx.url)
    assert len(client.search_for_series(limit=100, get_remaining=True)) == 150
    assert len(client.search_for_series(search_filters={"StudyInstanceUID": "1.2.3"}, limit=100,
                                        get_remaining=True)) == 150
    for path in ("/series?offset=100", "/series?offset=150", "/series?offset=200",
                 "/series?StudyInstanceUID=1.2.3&offset=100", "/series?PatientID=P1&offset=100&limit=100",
                 "/series?Modality=CT&offset=150", "/studies?offset=100"):
        assert _answer(nginx.port, "GET", path) == _answer(serve_port, "GET", path), path


# -- writes: growth without a reload, STOW through nginx -----------------------------

def _new_series(folder: Path, seed: int, rows: int) -> list[Path]:
    return generate_sample(folder, SampleSpec(patients=1, slices=8, rows=rows, columns=rows, seed=seed,
                                              multiframe=False, localizer=False))


def test_a_series_converted_later_is_served_without_a_reload(served: tuple[Nginx, str, Path],
                                                             tmp_path: Path) -> None:
    nginx, _, site = served
    client = DICOMwebClient(nginx.url)
    before = len(client.search_for_series())
    files = _new_series(tmp_path / "in", seed=41, rows=32)
    ds = pydicom.dcmread(files[0])
    assert client.search_for_series(search_filters={"SeriesInstanceUID": ds.SeriesInstanceUID}) == []
    assert convert([tmp_path / "in"], LocalStore(site)).ok
    assert nginx.proc.poll() is None  # the same nginx, never signalled
    assert len(client.search_for_series()) > before
    (row,) = client.search_for_series(search_filters={"SeriesInstanceUID": ds.SeriesInstanceUID})
    assert row["0020000D"]["Value"] == [ds.StudyInstanceUID]
    metas = client.retrieve_series_metadata(ds.StudyInstanceUID, ds.SeriesInstanceUID)
    assert len(metas) == len({pydicom.dcmread(p).SOPInstanceUID for p in files
                             if pydicom.dcmread(p).SeriesInstanceUID == ds.SeriesInstanceUID})
    assert client.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID) \
        .SOPInstanceUID == ds.SOPInstanceUID


def test_stow_through_nginx_lands(served: tuple[Nginx, str, Path], tmp_path: Path,
                                  caplog: pytest.LogCaptureFixture) -> None:
    nginx, _, _ = served
    _stow_lands(nginx, tmp_path, caplog, seed=42)


def test_stow_buffered_through_nginx_lands(nginx_binary: str, served: tuple[Nginx, str, Path],
                                           tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _, serve_url, site = served
    nginx = Nginx(nginx_binary, site, tmp_path / "prefix", upstream=serve_url, buffer_stow=True)
    try:
        _stow_lands(nginx, tmp_path, caplog, seed=43)
    finally:
        nginx.stop()


def _stow_lands(nginx: Nginx, tmp_path: Path, caplog: pytest.LogCaptureFixture, seed: int) -> None:
    """dicomweb-client's STOW-RS of a new series through nginx (chunked: over 1 MB), read back."""
    files = _new_series(tmp_path / "in", seed=seed, rows=256)
    datasets = [pydicom.dcmread(p) for p in files]
    series = datasets[0].SeriesInstanceUID
    datasets = [ds for ds in datasets if ds.SeriesInstanceUID == series]
    client = DICOMwebClient(nginx.url, headers={"Authorization": f"Bearer {TOKEN}"})
    with caplog.at_level(logging.INFO, logger="dicomweb_client"):
        client.store_instances(datasets)  # default chunk size: a body over 1 MB goes chunked
    assert any("chunked transfer encoding" in r.getMessage() for r in caplog.records)
    (row,) = client.search_for_series(search_filters={"SeriesInstanceUID": series})
    assert row["00201209"]["Value"] == [len(datasets)]
    got = client.retrieve_instance(datasets[0].StudyInstanceUID, series, datasets[0].SOPInstanceUID)
    assert got.PixelData == datasets[0].PixelData


def test_stow_needs_the_token_through_nginx(served: tuple[Nginx, str, Path]) -> None:
    nginx, _, _ = served
    response, body = nginx.raw("POST", "/studies",
                               {"Content-Type": 'multipart/related; type="application/dicom"'})
    assert response.status == 401, body
    assert response.getheader("Access-Control-Allow-Origin") == "*"
    assert len(response.headers.get_all("Access-Control-Allow-Origin") or []) == 1


def test_no_upstream_takes_no_writes(routing_site: Nginx) -> None:
    response, _ = routing_site.raw("POST", "/studies", {"Content-Length": "0"})
    assert response.status == 405


# -- nothing else reachable ----------------------------------------------------------

@pytest.mark.parametrize("path", [
    "/../secret", "/../../etc/passwd", "/%2e%2e/secret", "/%2E%2E/%2e%2e/secret",
    "/studies/..%2f..%2fsecret", "/..%2Fsecret", "/studies/../../secret", "/./../secret",
    "/%2fsecret", "//secret", "/..\\secret", "/..%5csecret", "/studies/%2e%2e/series", "/studies%00",
    "/studies/%2e%2e%2f%2e%2e%2fsecret", "/series/../studies",
])
def test_traversal_is_refused(served: tuple[Nginx, str, Path], path: str) -> None:
    nginx, _, _ = served
    response, body = nginx.raw("GET", path)
    assert 400 <= response.status < 500, (path, response.status)
    assert SECRET not in body


@pytest.mark.parametrize("path", ["//studies", "/studies\\", "/%2e/studies", "/./studies",
                                  "/series/%2E%2E/studies", "/.%2e/studies", "/studies%2F",
                                  "/studies/../studies"])
def test_paths_that_would_name_a_key_once_normalised_are_400(served: tuple[Nginx, str, Path],
                                                             path: str) -> None:
    """nginx merges slashes and resolves dot segments: refused first, never served as that key."""
    nginx, _, _ = served
    response, _ = nginx.raw("GET", path)
    assert response.status == 400, path


def test_hidden_and_internal_files_and_folders_are_refused(served: tuple[Nginx, str, Path]) -> None:
    nginx, _, site = served
    study = LocalStore(site).children("studies/")[0]
    (site / "studies" / f".{study}.body.123.0.tmp").write_bytes(SECRET)  # a write in progress
    (site / "studies" / f"{study}.meta").write_text(json.dumps({"rows": "1"}))
    metas = [p.relative_to(site).as_posix() for p in site.rglob("*.meta")]
    assert metas
    paths = ["/.static-dicomweb-store", "/_site/.lock", f"/studies/.{study}.body.123.0.tmp",
             "/studies.body", "/series.meta", f"/{metas[0]}", f"/{metas[0][:-len('.meta')]}.meta",
             "/studies.head.json", "/", "/studies/", f"/studies/{study}/", "/_site/", "/_q/",
             "/_q", f"/studies/{study}", "/studies/" + study + "+series", "/series.body"]
    for path in paths:
        response, body = nginx.raw("GET", path)
        assert 400 <= response.status < 500, (path, response.status)
        assert SECRET not in body and b"rows" not in body and b"mapping" not in body, path
        assert b"Index of" not in body, path
