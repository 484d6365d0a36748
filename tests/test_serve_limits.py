"""``serve`` exposed: bursts of connections, idle and slow clients, malformed requests, big bodies.

The server runs as its own process (``python -m static_dicomweb serve``) where
its memory or threads are measured (from ``/proc``), else in a thread of the
test.  Clients are raw sockets, so that requests go out exactly as written.
"""

from __future__ import annotations

import asyncio
import io
import re
import resource
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.uid import generate_uid

from static_dicomweb.serve import Limits, serve_in_thread

from .conftest import sample_files

pytestmark = pytest.mark.integration
TOKEN = "s3cret-token"
STOW_TYPE = 'multipart/related; type="application/dicom"; boundary=x'


@dataclass
class Process:
    """A ``serve`` process and its base URL."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        return host, int(port)

    def status(self, field: str) -> int:
        """A number from ``/proc/PID/status`` (VmRSS and VmHWM in kB, Threads)."""
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        match = re.search(rf"^{field}:\s+(\d+)", text, re.MULTILINE)
        assert match, (field, text)
        return int(match.group(1))

    def reset_peak(self) -> None:
        """Reset VmHWM to the current RSS (proc(5): clear_refs, value 5)."""
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")


def served_url(proc: subprocess.Popen[bytes], log: Path) -> str:
    """The base URL a ``serve`` process prints once it listens (up to a minute on a loaded machine)."""
    for _ in range(600):
        match = re.search(r"(http://127\.0\.0\.1:\d+)/", log.read_text())
        if match:
            return match.group(1)
        assert proc.poll() is None, log.read_text()
        time.sleep(0.1)
    raise AssertionError(f"serve printed no URL: {log.read_text()}")


@pytest.fixture(scope="module")
def served(site_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """``static-dicomweb serve`` of a copy of the sample site, with STOW-RS on, in its own process."""
    tmp = tmp_path_factory.mktemp("serve-process")
    site = tmp / "site"
    shutil.copytree(site_dir, site)
    log = tmp / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "static_dicomweb", "serve", str(site),
                                 "--port", "0", "--stow-token", TOKEN], stderr=out)
    try:
        yield Process(proc, served_url(proc, log), log)
    finally:
        proc.terminate()
        proc.wait(60)


@pytest.fixture(autouse=True, scope="module")
def _open_files() -> None:
    """A thousand client sockets need more than the 1024 descriptors some systems start with."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 and (hard == resource.RLIM_INFINITY or hard > soft):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard) if hard > 0 else 4096, hard))


def exchange(address: tuple[str, int], request: bytes, timeout: float = 30) -> bytes:
    """Send ``request`` on a new connection; the answer (read until whole, or the connection ends)."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(request)
        response = b""
        while not complete(response) and (chunk := sock.recv(65536)):
            response += chunk
    return response


def status_of(response: bytes) -> int:
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", response)
    assert match, response[:200]
    return int(match.group(1))


def complete(response: bytes) -> bool:
    """Whether ``response`` is one whole answer: a head and as many body bytes as it declares."""
    head, sep, body = response.partition(b"\r\n\r\n")
    match = re.search(rb"(?im)^content-length:\s*(\d+)\r?$", head)
    return bool(sep) and match is not None and len(body) == int(match.group(1))


# -- a burst, and idle connections ----------------------------------------------------------------

async def _one_get(address: tuple[str, int], path: str) -> bytes:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), 60)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 60)
    finally:
        writer.close()


async def _burst(address: tuple[str, int], path: str, count: int) -> list[bytes | BaseException]:
    return await asyncio.gather(*(_one_get(address, path) for _ in range(count)), return_exceptions=True)


@pytest.mark.slow
def test_a_burst_of_1000_connections_is_answered(served: Process) -> None:
    expected = requests.get(f"{served.url}/studies", timeout=30, stream=True).raw.read(decode_content=False)
    answers = asyncio.run(_burst(served.address, "/studies", 1000))
    failed = [a for a in answers if isinstance(a, BaseException) or status_of(a) != 200]
    assert not failed, f"{len(failed)} of 1000 not answered with 200, e.g. {failed[:3]}"
    assert all(isinstance(a, bytes) and a.endswith(b"\r\n\r\n" + expected) for a in answers)


@pytest.mark.slow
def test_a_thousand_idle_connections_take_no_thread_each(served: Process) -> None:
    before = served.status("Threads")
    socks = []
    try:
        for _ in range(1000):
            sock = socket.create_connection(served.address, timeout=60)
            sock.sendall(b"GET /studies HTTP/1.1\r\nHost: x\r\n\r\n")  # then stays open, idle
            socks.append(sock)
        for sock in socks:
            assert sock.recv(12) == b"HTTP/1.1 200"
        during = served.status("Threads")
    finally:
        for sock in socks:
            sock.close()
    assert during - before < 50, (before, during)


@pytest.fixture
def limited(site_dir: Path, tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A server in this process with short timeouts and a 1 MiB body limit; its address."""
    site = tmp_path / "site"
    shutil.copytree(site_dir, site)
    limits = Limits(idle_timeout=1, head_timeout=3, body_timeout=2, max_body=1 << 20)
    server, _url = serve_in_thread(str(site), stow_token=TOKEN, limits=limits)
    yield server.server_address
    server.shutdown()
    server.server_close()


def test_an_idle_keep_alive_connection_is_closed(limited: tuple[str, int]) -> None:
    with socket.create_connection(limited, timeout=60) as sock:
        sock.sendall(b"GET /studies HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while chunk := sock.recv(65536):  # the answer, then the end of the connection
            received += chunk
    assert status_of(received) == 200 and complete(received)


def test_a_connection_that_sends_nothing_is_closed(limited: tuple[str, int]) -> None:
    with socket.create_connection(limited, timeout=60) as sock:
        assert sock.recv(100) == b""


def test_a_request_head_sent_byte_by_byte_is_cut_off(limited: tuple[str, int]) -> None:
    """A slowloris client: each byte comes before the idle timeout, the head never ends."""
    with socket.create_connection(limited, timeout=60) as sock:
        sock.sendall(b"GET /studies HTTP/1.1\r\n")
        closed = False
        for _ in range(200):  # 40 s at most; the head timeout is 2 s
            try:
                sock.sendall(b"X")
            except OSError:
                closed = True
                break
            time.sleep(0.2)
            sock.setblocking(False)
            try:
                closed = sock.recv(100) == b""
            except BlockingIOError:
                pass
            finally:
                sock.setblocking(True)
            if closed:
                break
    assert closed


def test_a_declared_but_unsent_body_gets_408(limited: tuple[str, int]) -> None:
    head = (f"POST /studies HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: {STOW_TYPE}\r\nContent-Length: 1000\r\n\r\n").encode()
    with socket.create_connection(limited, timeout=60) as sock:
        sock.sendall(head + b"--x\r\n")  # then nothing
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert status_of(received) == 408 and complete(received)


# -- malformed requests --------------------------------------------------------------------------

MALFORMED = {
    "segment of 300 characters": (b"GET /studies/" + b"9" * 300 + b"/series HTTP/1.1\r\nHost: x\r\n\r\n",
                                  404),
    "one segment of 256 characters": (b"GET /" + b"a" * 256 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    "key longer than S3 takes": (b"GET /" + b"a/" * 600 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    "target of 10,000 bytes": (b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    "head of 100 kB": (b"GET /studies HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"b" * 100_000
                       + b"\r\n\r\n", 431),
    "Content-Length: abc on GET": (b"GET /studies HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
                                   400),
    "Content-Length: abc on POST": (b"POST /studies HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                                    + TOKEN.encode() + b"\r\nContent-Length: abc\r\n\r\n", 400),
    "two Content-Lengths": (b"POST /studies HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                            b"Content-Length: 2\r\n\r\nxx", 400),
    "bad percent-encoding": (b"GET /studies/%zz/series HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "truncated percent-encoding": (b"GET /studies%4 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "percent-encoding that is not UTF-8": (b"GET /studies/%ff HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "raw byte that is not ASCII": (b"GET /studies/\xff HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "not HTTP": (b"HELLO\r\n\r\n", 400),
    "bad chunk size": (b"POST /studies HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
                       + b"\r\nContent-Type: " + STOW_TYPE.encode()
                       + b"\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    "method the site has not": (b"DELETE /studies HTTP/1.1\r\nHost: x\r\n\r\n", 405),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_requests_get_a_whole_4xx_answer(served: Process, name: str) -> None:
    request, expected = MALFORMED[name]
    response = exchange(served.address, request)
    assert response, f"{name}: the connection was dropped without an answer"
    assert status_of(response) == expected, response[:300]
    assert complete(response), response[:300]
    assert b"Traceback" not in response


def test_the_server_still_answers_after_malformed_requests(served: Process) -> None:
    for request, _ in MALFORMED.values():
        exchange(served.address, request)
    assert requests.get(f"{served.url}/studies", timeout=30).status_code == 200
    assert "Traceback" not in served.log.read_text()


# -- bodies ---------------------------------------------------------------------------------------

def _zeros(total: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    block = bytes(chunk)
    for _ in range(total // chunk):
        yield block


@pytest.mark.slow
def test_200_mb_without_credentials_gets_401_without_the_server_growing(served: Process) -> None:
    size = 200 << 20
    assert requests.post(f"{served.url}/studies", data=b"x", timeout=30).status_code == 401  # warm
    served.reset_peak()
    before = served.status("VmRSS")
    # Content-Length, sent whole before the answer is read (as requests and urllib3 do)
    head = (f"POST /studies HTTP/1.1\r\nHost: x\r\nContent-Type: {STOW_TYPE}\r\n"
            f"Content-Length: {size}\r\n\r\n").encode()
    with socket.create_connection(served.address, timeout=120) as sock:
        sock.sendall(head)
        for block in _zeros(size):
            sock.sendall(block)
        answer = sock.recv(65536)
    assert status_of(answer) == 401
    # chunked, from a generator (requests' streaming upload)
    response = requests.post(f"{served.url}/studies", data=_zeros(size), timeout=120,
                             headers={"Content-Type": STOW_TYPE})
    assert response.status_code == 401
    grown = served.status("VmHWM") - before
    assert grown < 10_000, f"serve's peak memory grew by {grown} kB for 2 x 200 MB unauthenticated"


def test_expect_100_continue_without_credentials_is_refused_before_the_body(served: Process) -> None:
    head = (f"POST /studies HTTP/1.1\r\nHost: x\r\nContent-Type: {STOW_TYPE}\r\n"
            f"Content-Length: {200 << 20}\r\nExpect: 100-continue\r\n\r\n").encode()
    response = exchange(served.address, head)  # the body is never sent
    assert status_of(response) == 401 and complete(response)
    assert b"100 Continue" not in response


def test_expect_100_continue_with_credentials_gets_continue(served: Process) -> None:
    head = (f"POST /studies HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: {STOW_TYPE}\r\nContent-Length: 9\r\nExpect: 100-continue\r\n\r\n").encode()
    with socket.create_connection(served.address, timeout=60) as sock:
        sock.sendall(head)
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"--x--\r\n\r\n")
        response = b""
        while not complete(response) and (chunk := sock.recv(65536)):
            response += chunk
    assert status_of(response) == 400, response  # an empty multipart body: not a STOW-RS request


def test_a_body_over_the_limit_gets_413(limited: tuple[str, int]) -> None:
    url = "http://{}:{}/studies".format(*limited)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": STOW_TYPE}
    declared = requests.post(url, data=bytes(2 << 20), headers=headers, timeout=60)
    assert declared.status_code == 413
    chunked = requests.post(url, data=_zeros(4 << 20, 64 << 10), headers=headers, timeout=60)
    assert chunked.status_code == 413
    assert "max-body" in chunked.text


@pytest.mark.slow
def test_a_250_mb_stow_is_spooled_to_disk_not_held_in_memory(served: Process, sample_dir: Path) -> None:
    """200 parts of 1.25 MB that are not DICOM, then one instance: chunked, as dicomweb-client sends."""
    ds = pydicom.dcmread(sample_files(sample_dir)[0])
    ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    head = b"--x\r\nContent-Type: application/dicom\r\n\r\n"
    junk = b"not DICOM " * (1 << 17)  # 1.25 MB

    def body() -> Iterator[bytes]:
        for _ in range(200):
            yield head + junk + b"\r\n"
        yield head + buf.getvalue() + b"\r\n--x--\r\n"

    served.reset_peak()
    before = served.status("VmRSS")
    response = requests.post(f"{served.url}/studies", data=body(), timeout=600, headers={
        "Content-Type": STOW_TYPE, "Authorization": f"Bearer {TOKEN}"})
    grown = served.status("VmHWM") - before
    assert response.status_code == 202, response.text
    answer = response.json()
    assert len(answer["00081198"]["Value"]) == 200
    assert answer["00081199"]["Value"][0]["00081155"]["Value"] == [ds.SOPInstanceUID]
    found = requests.get(f"{served.url}/series?SeriesInstanceUID={ds.SeriesInstanceUID}", timeout=30)
    assert [row["0020000E"]["Value"][0] for row in found.json()] == [ds.SeriesInstanceUID]
    assert grown < 40_000, f"serve's peak memory grew by {grown} kB for a 250 MB STOW-RS body"
