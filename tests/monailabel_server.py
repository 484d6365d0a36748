"""A real MONAI Label server for tests: ``clients/monailabel/start.sh`` on a site URL, stopped after."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
CLIENT = REPO / "clients" / "monailabel"
VENV_PYTHON = CLIENT / ".venv" / "bin" / "python"
INSTALLED = CLIENT / ".venv" / ".installed"
START_TIMEOUT_S = 300


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def monailabel_env(work: Path, token: str) -> dict[str, str]:
    """The environment of a server that sends the STOW token as its HTTP Basic password."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MONAI_LABEL_") and k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update({"MONAILABEL_WORK": str(work), "MONAI_LABEL_DICOMWEB_USERNAME": "monailabel",
                "MONAI_LABEL_DICOMWEB_PASSWORD": token,
                "HOME": str(work)})  # anything MONAI Label caches under ~ stays in the test's folder
    return env


@contextlib.contextmanager
def running_monailabel(site_url: str, work: Path, token: str, port: int | None = None,
                       models: str | None = None) -> Iterator[tuple[str, Path]]:
    """Start MONAI Label on ``site_url``; yield its URL and log file; stop it (the whole group) after."""
    port = port or free_port()
    work.mkdir(parents=True, exist_ok=True)
    env = monailabel_env(work / "ml", token)
    if models:
        env["MONAILABEL_MODELS"] = models
    log_file = work / "monailabel.log"
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    with log_file.open("wb") as out:
        process = subprocess.Popen(["bash", str(CLIENT / "start.sh"), site_url, str(port)], env=env,
                                   cwd=work, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while True:
            tail = log_file.read_text(errors="replace")[-4000:]
            assert process.poll() is None, f"MONAI Label exited with {process.returncode}\n{tail}"
            assert time.monotonic() - started < START_TIMEOUT_S, f"MONAI Label did not start\n{tail}"
            try:
                if requests.get(f"{url}/favicon.ico", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        yield url, log_file
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
