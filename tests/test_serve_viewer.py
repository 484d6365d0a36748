"""``serve --viewer``: OHIF's build under ``/viewer/`` of the server that serves the site."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from static_dicomweb.serve import serve_in_thread, viewer_url

viewer = pytest.importorskip("static_dicomweb.viewer")  # skips only while the module is missing

pytestmark = pytest.mark.integration
INDEX = (b'<!doctype html><html><head><script>window.PUBLIC_URL="/";</script>'
         b'<script src="/app.bundle.js"></script></head><body>OHIF</body></html>')


@pytest.fixture
def dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in for OHIF's dist/ (its index.html and one bundle), named by the environment."""
    folder = tmp_path / "ohif-dist"
    folder.mkdir()
    (folder / "index.html").write_bytes(INDEX)
    (folder / "app.bundle.js").write_bytes(b'__webpack_require__.p = "/";console.log("ohif");')
    monkeypatch.setenv(viewer.ENV_DIST, str(folder))
    return folder


@pytest.fixture
def served(site_dir: Path, dist: Path) -> Iterator[str]:
    server, url = serve_in_thread(str(site_dir), viewer=True)
    assert viewer_url(server) == f"{url}/viewer/"
    yield url
    server.shutdown()
    server.server_close()


def test_viewer_redirects_to_its_folder(served: str) -> None:
    response = requests.get(f"{served}/viewer", allow_redirects=False, timeout=30)
    assert response.status_code == 301
    assert response.headers["Location"] == "/viewer/"
    query = requests.get(f"{served}/viewer?StudyInstanceUIDs=1.2", allow_redirects=False, timeout=30)
    assert query.headers["Location"] == "/viewer/?StudyInstanceUIDs=1.2"


def test_viewer_answers_its_build_configured_for_the_site(served: str) -> None:
    index = requests.get(f"{served}/viewer/", timeout=30)
    assert index.status_code == 200
    assert index.headers["Content-Type"].startswith("text/html")
    assert b'window.PUBLIC_URL="/viewer/"' in index.content  # the build moved under the mount
    assert b'src="/viewer/app.bundle.js"' in index.content
    bundle = requests.get(f"{served}/viewer/app.bundle.js", timeout=30)
    assert bundle.headers["Content-Type"].startswith("text/javascript")
    config = requests.get(f"{served}/viewer/app-config.js", timeout=30)
    assert config.status_code == 200 and b"staticWado: true" in config.content
    route = requests.get(f"{served}/viewer/viewer?StudyInstanceUIDs=1.2", timeout=30)
    assert route.content == index.content  # a route of the single-page app
    assert requests.get(f"{served}/viewer/missing.js", timeout=30).status_code == 404
    assert requests.head(f"{served}/viewer/", timeout=30).status_code == 200


def test_the_site_is_served_beside_the_viewer(served: str) -> None:
    assert requests.get(f"{served}/studies", timeout=30).json()


def test_cli_prints_the_viewer_url(site_dir: Path, dist: Path, tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "static_dicomweb", "serve", str(site_dir), "--port",
                                 "0", "--viewer"], stderr=out)
    try:
        found = None
        for _ in range(600):
            found = re.search(r"viewer: (http://127\.0\.0\.1:\d+/viewer/)", log.read_text())
            if found:
                break
            assert proc.poll() is None, log.read_text()
            time.sleep(0.1)
        assert found, log.read_text()
        assert requests.get(found.group(1), timeout=30).content.startswith(b"<!doctype html>")
    finally:
        proc.terminate()
        proc.wait(60)


def test_cli_says_how_to_install_a_missing_viewer(site_dir: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(viewer.ENV_DIST, str(tmp_path / "nothing"))
    out = subprocess.run([sys.executable, "-m", "static_dicomweb", "serve", str(site_dir), "--port", "0",
                          "--viewer"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 3
    assert "make ohif-setup" in out.stderr
