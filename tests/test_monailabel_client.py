"""The MONAI Label client against a real socket on 127.0.0.1 that resets a kept-alive connection."""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Callable, Iterator

import pytest

from static_dicomweb.monailabel import MonaiLabelClient, MonaiLabelError


def _serve(sock: socket.socket, plan: list[str]) -> None:
    """Answer one request per connection as ``plan`` says: ``reset`` (RST) or ``ok`` (JSON)."""
    for step in plan:
        conn, _ = sock.accept()
        with conn:
            conn.recv(65536)
            if step == "reset":  # what a server closing an idle keep-alive connection looks like
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                continue
            body = json.dumps({"id": "t1", "status": "DONE"}).encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                         + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)


@pytest.fixture
def server() -> Iterator[Callable[[list[str]], str]]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    threads = []

    def start(plan: list[str]) -> str:
        thread = threading.Thread(target=_serve, args=(sock, plan), daemon=True)
        thread.start()
        threads.append(thread)
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    yield start
    for thread in threads:
        thread.join(10)
    sock.close()


def test_a_poll_whose_connection_is_reset_is_asked_again(server: Callable[[list[str]], str]) -> None:
    url = server(["reset", "ok"])
    assert MonaiLabelClient(url, timeout=10).training_status() == {"id": "t1", "status": "DONE"}


def test_a_post_is_not_sent_twice(server: Callable[[list[str]], str]) -> None:
    url = server(["reset"])
    with pytest.raises(MonaiLabelError, match="no answer"):
        MonaiLabelClient(url, timeout=10).start_training("spine_cpu")
