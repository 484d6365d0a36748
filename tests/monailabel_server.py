"""A real MONAI Label server for tests: ``clients/monailabel/start.sh`` on a site URL, stopped after."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from static_dicomweb.serve import serve_in_thread

REPO = Path(__file__).resolve().parents[1]
CLIENT = REPO / "clients" / "monailabel"
VENV_PYTHON = CLIENT / ".venv" / "bin" / "python"
INSTALLED = CLIENT / ".venv" / ".installed"
START_TIMEOUT_S = 300


_ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3})')


class RequestLog(logging.Handler):
    """Keeps the access log lines of ``static_dicomweb.serve`` (it logs every request at DEBUG)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())  # handle() holds the handler's lock around emit()

    def requests(self) -> list[tuple[str, str, int]]:
        with self.lock:  # type: ignore[union-attr]
            matches = [_ACCESS.search(line) for line in self.lines]
        return [(m["method"], m["path"], int(m["status"])) for m in matches if m]


@contextlib.contextmanager
def serving_with_access_log(site: Path, token: str) -> Iterator[tuple[str, RequestLog]]:
    """Serve ``site`` (STOW-RS with ``token``); yield its URL and the log of every request it answers."""
    access = RequestLog()
    serve_log = logging.getLogger("static_dicomweb.serve")
    level = serve_log.level
    serve_log.addHandler(access)
    serve_log.setLevel(logging.DEBUG)
    server, site_url = serve_in_thread(str(site), stow_token=token)
    try:
        yield site_url, access
    finally:
        server.shutdown()
        server.server_close()
        serve_log.removeHandler(access)
        serve_log.setLevel(level)


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
        stop_group(process)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """End ``process`` and all it started (it leads its own group): SIGTERM, SIGKILL after 30 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
