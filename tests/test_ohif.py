"""OHIF v3 in a real browser against ``serve``: the published @ohif/app build, headless Chromium.

``clients/ohif/setup.sh`` installs what this needs (Debian's chromium, playwright-core, the OHIF
build); without it the tests skip and say so. A small synthetic CT site (1 patient, 5 series:
native, RLE, a topogram, multi-frame native and JPEG 2000) is served by ``serve``; OHIF's build
is served by ``clients/ohif/serve_ohif.py`` with ``clients/ohif/app-config.js`` (one DICOMweb
data source on the site, ``staticWado: true``); ``clients/ohif/viewer-test.mjs`` drives Chromium:
study list -> first CT study -> viewer -> CT pixels in the viewport (pixel statistics), every
series, the middle slice of the largest, MPR. Screenshots, every request the page made with its
status, and the console go to ``.artifacts/ohif/<case>/``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from static_dicomweb.serve import serve_in_thread

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "clients" / "ohif"
ARTIFACTS = ROOT / ".artifacts" / "ohif"
CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.clients]


def _missing() -> str | None:
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
    reason = _missing()
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


@pytest.mark.parametrize(("profile", "isolation"), [("default", False), ("viewer", True)],
                         ids=["default-profile", "viewer-profile-cross-origin-isolated"])
def test_ohif_shows_ct_from_the_site(ct_sample: Path, tmp_path: Path, ohif_server,  # type: ignore[no-untyped-def]
                                     profile: str, isolation: bool) -> None:
    """OHIF's study list lists the study; the viewer shows CT pixels of every series; no request fails."""
    site = _site(ct_sample, tmp_path / "site", profile)
    server, site_url = serve_in_thread(str(site))
    out = tmp_path / "out"
    try:
        ohif_url = ohif_server(site_url, isolation, tmp_path / "ohif-access.log")
        run = subprocess.run(
            ["node", str(CLIENT / "viewer-test.mjs"), "--ohif", ohif_url, "--site", site_url,
             "--out", str(out), "--timeout", "90"],
            cwd=CLIENT, capture_output=True, text=True, timeout=600,
            env={**os.environ, "CHROMIUM": str(CHROMIUM)})
    finally:
        server.shutdown()
        server.server_close()
    case = f"{profile}{'-isolated' if isolation else ''}"
    keep = ARTIFACTS / case
    shutil.rmtree(keep, ignore_errors=True)
    if out.exists():
        shutil.copytree(out, keep)
    report = f"{run.stdout}\n{run.stderr[-3000:]}\nartefacts: {keep}"
    assert run.returncode == 0, report
    result = json.loads((out / "result.json").read_text())
    assert result["ok"], report
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
    assert result["steps"]["crossOriginIsolated"] is isolation
    for name in ("1-study-list.png", "3-viewer.png", "5-viewer-middle-slice.png", "6-viewer-mpr.png"):
        assert (keep / name).stat().st_size > 10_000, name
