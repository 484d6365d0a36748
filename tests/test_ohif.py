"""OHIF v3 in a real browser against ``serve``: the published @ohif/app build, headless Chromium.

``clients/ohif/setup.sh`` (``make ohif-setup``) installs what the browser tests need (Debian's
chromium, playwright-core, the OHIF build); without it they skip and say so. A small synthetic CT
site (1 patient, 5 series: native, RLE, a topogram, multi-frame native and JPEG 2000) is served
two ways:

- ``static-dicomweb serve SITE --viewer``: OHIF's build under ``/viewer/`` of the site's own
  server (:class:`static_dicomweb.viewer.Viewer`), configured for the site at ``/``;
- ``serve`` for the site and ``clients/ohif/serve_ohif.py`` for OHIF at the root of another
  origin (the same Viewer mounted at ``/``): the cross-origin case, with and without
  cross-origin isolation.

``clients/ohif/viewer-test.mjs`` drives Chromium: study list -> first CT study -> viewer -> CT
pixels in the viewport (pixel statistics), every series, the middle slice of the largest, MPR.
Screenshots, every request the page made with its status, and the console go to
``.artifacts/ohif/<case>/`` (the test prints the folder).

The Viewer's answers themselves (routes, assets, paths outside the build, the generated
configuration) are tested without a browser on a small build-shaped folder.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

import pytest

from static_dicomweb.serve import serve_in_thread
from static_dicomweb.viewer import ENV_DIST, Viewer, ViewerNotInstalled

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "clients" / "ohif"
ARTIFACTS = ROOT / ".artifacts" / "ohif"
CHROMIUM = Path("/usr/bin/chromium")

def ohif_missing() -> str | None:
    """Why OHIF cannot be driven here (node, Chromium, clients/ohif's setup), or None."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (clients/ohif/setup.sh installs Debian's chromium)"
    if not (CLIENT / "node_modules" / "playwright-core").is_dir():
        return "clients/ohif/node_modules is missing: run clients/ohif/setup.sh"
    if not (CLIENT / "ohif-dist" / "index.html").is_file():
        return "clients/ohif/ohif-dist (the OHIF build) is missing: run clients/ohif/setup.sh"
    return None


def _serve_ohif_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("serve_ohif", CLIENT / "serve_ohif.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ct_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = ohif_missing()
    if reason:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("ohif") / "input"
    subprocess.run([sys.executable, "-m", "static_dicomweb", "sample", str(out),
                    "--patients", "1", "--slices", "16", "--rows", "128"], check=True, capture_output=True)
    return out


def _site(sample: Path, dest: Path, profile: str) -> Path:
    subprocess.run([sys.executable, "-m", "static_dicomweb", "convert", str(sample), "--out", str(dest),
                    "--profile", profile], check=True, capture_output=True)
    return dest


@pytest.fixture
def ohif_server() -> Iterator[object]:
    """A factory: (site URL, isolation) -> OHIF's URL; every server it starts is shut down."""
    module = _serve_ohif_module()
    servers = []

    def start(site_url: str, isolation: bool, log: Path) -> str:
        server = module.make_server(CLIENT / "ohif-dist", site_url, isolation=isolation, log=log)
        threading.Thread(target=server.serve_forever, daemon=True, name="ohif").start()
        servers.append(server)
        host, port = server.server_address[:2]
        return f"http://{host}:{port}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _viewer_test(ohif_url: str, site_url: str, out: Path, case: str,
                 capsys: pytest.CaptureFixture[str]) -> tuple[dict, Path, str]:  # type: ignore[type-arg]
    """Run viewer-test.mjs; keep its artefacts in .artifacts/ohif/<case>/ and say where."""
    run = subprocess.run(
        ["node", str(CLIENT / "viewer-test.mjs"), "--ohif", ohif_url, "--site", site_url,
         "--out", str(out), "--timeout", "90"],
        cwd=CLIENT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "CHROMIUM": str(CHROMIUM)})
    keep = ARTIFACTS / case
    shutil.rmtree(keep, ignore_errors=True)
    if out.exists():
        shutil.copytree(out, keep)
    with capsys.disabled():
        print(f"\nOHIF artefacts ({case}): {keep}/ (screenshots 1-6, requests.log, console.log)")
    report = f"{run.stdout}\n{run.stderr[-3000:]}\nartefacts: {keep}"
    assert run.returncode == 0, report
    result = json.loads((out / "result.json").read_text())
    assert result["ok"], report
    return result, keep, report


def _check_ct_study(result: dict, keep: Path, report: str) -> None:  # type: ignore[type-arg]
    """The study list, every series, the middle slice and MPR of the 1-patient sample, no failed request."""
    assert result["requests"]["site"] > 0, report
    assert result["requests"]["failed"] == [], f"requests that failed: {result['requests']['failed']}"
    assert result["steps"]["studyList"]["rows"] == 1
    assert [s["description"] for s in result["steps"]["series"]] == [
        "Topogram AP/LAT", "Axial 5.0 mm STANDARD", "Axial 5.0 mm BONE (signed)",
        "Enhanced CT 8 frames", "Enhanced CT 8 frames JPEG 2000"]
    assert all(s["ok"] for s in result["steps"]["series"]), report
    assert result["steps"]["middleSlice"]["slice"].endswith("(8/16)")
    thumbnails = result["steps"]["thumbnails"]
    assert len(thumbnails) == 5 and all(t["image"].startswith("256x256") for t in thumbnails), thumbnails
    for name in ("1-study-list.png", "3-viewer.png", "5-viewer-middle-slice.png", "6-viewer-mpr.png"):
        assert (keep / name).stat().st_size > 10_000, name


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.clients
@pytest.mark.parametrize(("profile", "isolation"), [("default", False), ("viewer", True)],
                         ids=["default-profile", "viewer-profile-cross-origin-isolated"])
def test_ohif_shows_ct_from_the_site(ct_sample: Path, tmp_path: Path, ohif_server,  # type: ignore[no-untyped-def]
                                     profile: str, isolation: bool,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """OHIF on another origin lists the study, shows CT pixels of every series; no request fails."""
    site = _site(ct_sample, tmp_path / "site", profile)
    server, site_url = serve_in_thread(str(site))
    try:
        ohif_url = ohif_server(site_url, isolation, tmp_path / "ohif-access.log")
        result, keep, report = _viewer_test(ohif_url, site_url, tmp_path / "out",
                                            f"{profile}{'-isolated' if isolation else ''}", capsys)
    finally:
        server.shutdown()
        server.server_close()
    _check_ct_study(result, keep, report)
    assert result["steps"]["crossOriginIsolated"] is isolation


def _wait_for(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until ``url`` answers 200 (the server is up), or the server has exited."""
    for _ in range(600):
        if proc.poll() is not None:
            raise AssertionError(f"serve exited with {proc.returncode}: {log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer: {log.read_text()}")


@pytest.fixture
def serve_viewer(tmp_path: Path) -> Iterator[object]:
    """A factory: site folder -> the base URL of ``static-dicomweb serve SITE --viewer`` (port 0)."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(site: Path) -> str:
        log = tmp_path / f"serve-{len(procs)}.log"
        with open(log, "wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", "static_dicomweb", "serve", str(site), "--viewer",
                                     "--host", "127.0.0.1", "--port", "0"], stderr=err)
        procs.append(proc)
        match = None
        for _ in range(600):
            match = re.search(r" at (http://127\.0\.0\.1:\d+)/", log.read_text())
            if match or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert match, f"serve printed no URL: {log.read_text()}"
        url = match.group(1)
        _wait_for(f"{url}/viewer/", proc, log)
        return url

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(60)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.clients
def test_serve_viewer_shows_ct(ct_sample: Path, tmp_path: Path, serve_viewer,  # type: ignore[no-untyped-def]
                               capsys: pytest.CaptureFixture[str]) -> None:
    """``serve --viewer``: OHIF at /viewer/ of the site's own server lists the study and draws its pixels.

    Every request the page makes (OHIF's bundles, workers, wasm and font under /viewer/, the
    site's objects at /) succeeds; the viewport's canvas holds an image, not one value.
    """
    site = _site(ct_sample, tmp_path / "site", "default")
    url = serve_viewer(site)
    result, keep, report = _viewer_test(f"{url}/viewer/", url, tmp_path / "out", "serve-viewer", capsys)
    _check_ct_study(result, keep, report)
    canvas = result["steps"]["viewport"]["canvas"]
    assert canvas and canvas["distinctValues"] > 16 and canvas["max"] > canvas["min"], canvas
    # OHIF's own files came from under /viewer/; everything else the page asked for is the site's
    requests_log = (keep / "requests.log").read_text().splitlines()
    paths = [urlsplit(line.split()[2]).path for line in requests_log if line.split()[2].startswith(url)]
    outside = {p for p in paths if not p.startswith("/viewer/") and not re.match(r"^/(studies|series)\b", p)}
    assert not outside, f"requests outside /viewer/ and the site: {sorted(outside)}"
    assert any(p.startswith("/viewer/app.bundle.") for p in paths)
    assert result["steps"]["viewerUrl"].startswith(f"{url}/viewer/viewer?StudyInstanceUIDs=")


# The Viewer's answers, without a browser, on a folder shaped like OHIF's build (the files and the
# root-absolute paths that the published build holds, see clients/ohif/README.md).
INDEX = (b'<!doctype html><html><head><script>window.PUBLIC_URL="/"</script>'
         b'<link rel="manifest" href="/manifest.json"><script src="/app-config.js"></script>'
         b'<a href="//cdn.example/x">x</a><script>window.PUBLIC_URL="/"</script>'
         b'<script defer src="/app.bundle.0123.js"></script></head><body></body></html>')


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    out = tmp_path / "dist"
    (out / "assets").mkdir(parents=True)
    (out / "index.html").write_bytes(INDEX)
    (out / "app-config.js").write_text("window.config = {name: 'the build own'};\n")
    (out / "app.bundle.0123.js").write_bytes(b'(() => {\n__webpack_require__.p = "/";\n})();\n')
    (out / "app.bundle.css").write_bytes(b"@font-face{src:url(/a.woff2)}")
    (out / "a.woff2").write_bytes(b"wOF2")
    (out / "x.wasm").write_bytes(b"\0asm")
    (out / "assets" / "favicon.ico").write_bytes(b"ico")
    (out / "manifest.json").write_text('{"icons": [{"src": "/assets/a.png"}], "start_url": "./index.html"}')
    (tmp_path / "secret.txt").write_text("not the build's")
    return out


def test_viewer_answers_index_for_routes_and_none_for_missing_assets(dist: Path) -> None:
    viewer = Viewer(dist, "/")
    index = viewer.answer("")
    assert index is not None and index[1] == "text/html; charset=utf-8"
    for route in ("viewer", "viewer/dicomweb", "local", "assets", "assets/", "viewer?StudyInstanceUIDs=1.2"):
        assert viewer.answer(route) == index, route
    # a missing asset, or any path that would leave the build folder: nothing (a 404)
    for missing in ("nope.js", "assets/nope.png", "1234.bundle.abc.js", "../secret.txt",
                    "assets/../../secret.txt", "..", "../dist/../secret", "a\\..\\secret.txt", "x\0.js"):
        assert viewer.answer(missing) is None, missing
    assert viewer.answer("/etc/passwd") == index  # dist/etc/passwd: a route, not the system's file


def test_viewer_serves_the_build_under_its_mount(dist: Path) -> None:
    viewer = Viewer(dist, "/")
    body, _ = viewer.answer("")  # type: ignore[misc]
    assert body.count(b'window.PUBLIC_URL="/viewer/"') == 2
    assert b'href="/viewer/manifest.json"' in body and b'src="/viewer/app.bundle.0123.js"' in body
    assert b'src="/viewer/app-config.js"' in body and b'href="//cdn.example/x"' in body
    assert viewer.answer("app.bundle.0123.js") == (
        b'(() => {\n__webpack_require__.p = "/viewer/";\n})();\n', "text/javascript; charset=utf-8")
    assert viewer.answer("app.bundle.css") == (b"@font-face{src:url(/viewer/a.woff2)}",
                                               "text/css; charset=utf-8")
    assert viewer.answer("a.woff2") == (b"wOF2", "font/woff2")
    assert viewer.answer("x.wasm") == (b"\0asm", "application/wasm")
    assert viewer.answer("assets/favicon.ico") == (b"ico", "image/x-icon")
    assert viewer.answer("manifest.json") == (
        b'{"icons": [{"src": "/viewer/assets/a.png"}], "start_url": "./index.html"}', "application/json")
    # mounted at the root (serve_ohif.py), the build is served as it is
    root = Viewer(dist, "http://127.0.0.1:9/", mount="/")
    assert root.answer("") == (INDEX, "text/html; charset=utf-8")
    assert root.answer("app.bundle.css") == (b"@font-face{src:url(/a.woff2)}", "text/css; charset=utf-8")


def test_viewer_generates_the_data_source_for_the_site(dist: Path) -> None:
    config, kind = Viewer(dist, "/").answer("app-config.js")  # type: ignore[misc]
    assert kind == "text/javascript; charset=utf-8"
    text = config.decode()
    assert "the build own" not in text
    assert 'new URL("/", window.location.href)' in text and 'routerBasename: "/viewer"' in text
    for setting in ("qidoRoot: root", "wadoRoot: root", "staticWado: true",
                    "bulkDataURI: { enabled: true, relativeResolution: 'series' }",
                    "imageRendering: 'wadors'", "defaultDataSourceName: 'static-dicomweb'"):
        assert setting in text, setting
    other = Viewer(dist, "https://cdn.example/site/", mount="/").answer("app-config.js")
    assert other is not None and b'new URL("https://cdn.example/site/"' in other[0]
    assert b'routerBasename: "/"' in other[0]
    with pytest.raises(ValueError, match="must start and end with"):
        Viewer(dist, "/", mount="/viewer")


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_viewer_config_resolves_the_site_in_a_page(dist: Path) -> None:
    """The generated app-config.js runs and points both roots at the page's origin (no trailing slash)."""
    config = Viewer(dist, "/").answer("app-config.js")[0].decode()  # type: ignore[index]
    script = ("globalThis.window = {location: {href: 'http://127.0.0.1:8080/viewer/viewer?x=1'}};\n"
              + config + "\nconst c = window.config.dataSources[0].configuration;\n"
              + "console.log(JSON.stringify([c.qidoRoot, c.wadoRoot, c.staticWado, "
              + "window.config.routerBasename]));")
    out = subprocess.run(["node", "-e", script], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == ["http://127.0.0.1:8080", "http://127.0.0.1:8080", True, "/viewer"]


def test_viewer_not_installed_says_what_to_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_DIST, str(tmp_path / "nothing"))
    with pytest.raises(ViewerNotInstalled, match=r"nothing.*make ohif-setup"):
        Viewer.from_default()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "index.html").write_text("<html>another app</html>")
    monkeypatch.setenv(ENV_DIST, str(tmp_path / "other"))
    with pytest.raises(ViewerNotInstalled, match=r"index.html: not an OHIF v3 build"):
        Viewer.from_default()


def test_serve_viewer_without_the_build_says_what_to_run(site_dir: Path, tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "static_dicomweb", "serve", str(site_dir), "--viewer",
                          "--host", "127.0.0.1", "--port", "0"],
                         env={**os.environ, ENV_DIST: str(tmp_path / "none")},
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 3, run.stderr
    assert "make ohif-setup" in run.stderr and str(tmp_path / "none") in run.stderr, run.stderr


def test_viewer_from_the_environment(dist: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_DIST, str(dist))
    viewer = Viewer.from_default()
    assert viewer.dist == dist and viewer.site_url == "/" and viewer.mount == "/viewer/"
