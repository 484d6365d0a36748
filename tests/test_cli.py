"""The four CLI verbs, through the installed entry point, with their exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.integration
EXE = str(Path(sys.executable).with_name("static-dicomweb"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=300, check=False)


def test_help_names_every_verb() -> None:
    out = run("--help")
    assert out.returncode == 0
    for verb in ("convert", "serve", "validate", "sample"):
        assert verb in out.stdout
        assert run(verb, "--help").returncode == 0
    assert run("convert").returncode == 2  # usage error


def test_sample_convert_validate(tmp_path: Path) -> None:
    assert run("sample", str(tmp_path / "in"), "--slices", "4", "--rows", "32").returncode == 0
    convert = run("convert", str(tmp_path / "in"), "--out", str(tmp_path / "site"), "--workers", "2")
    assert convert.returncode == 0, convert.stderr
    assert "converted" in convert.stderr
    check = run("validate", str(tmp_path / "site"), "--report", str(tmp_path / "r.json"))
    assert check.returncode == 0, check.stderr
    assert json.loads((tmp_path / "r.json").read_text())["ok"] is True


def test_rejections_give_exit_1_and_name_the_file(tmp_path: Path) -> None:
    run("sample", str(tmp_path / "in"), "--slices", "2", "--rows", "32", "--patients", "1")
    (tmp_path / "in" / "broken.dcm").write_bytes(b"\x00" * 10)
    out = run("convert", str(tmp_path / "in"), "--out", str(tmp_path / "site"))
    assert out.returncode == 1
    assert "broken.dcm" in out.stderr
    assert run("validate", str(tmp_path / "site")).returncode == 0  # the valid part is complete


def test_validate_fails_on_a_missing_site(tmp_path: Path) -> None:
    out = run("validate", str(tmp_path / "nothing"))
    assert out.returncode == 3  # nothing to validate is a failure, not a finding
    assert "no such site" in out.stderr
    assert not (tmp_path / "nothing").exists()


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_serve_answers_until_stopped(site_dir: Path, stop: signal.Signals) -> None:
    # started with SIGINT ignored, as a background job of a non-interactive shell is
    proc = subprocess.Popen([EXE, "serve", str(site_dir), "--host", "127.0.0.1", "--port", "0"],
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        line = proc.stderr.readline()  # type: ignore[union-attr]
        url = line.split(" at ")[1].split("/ ")[0]
        deadline = time.monotonic() + 10
        while True:
            try:
                resp = requests.get(f"{url}/studies", timeout=5)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert resp.status_code == 200
        assert resp.headers["Content-Type"] == "application/dicom+json"
        assert resp.headers["Content-Encoding"] == "gzip"
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        assert len(resp.json()) >= 2
    finally:
        os.kill(proc.pid, stop)
        assert proc.wait(10) == 0
