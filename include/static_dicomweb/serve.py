"""``serve``: a site (a folder or ``s3://bucket/prefix``) over HTTP, answering exactly as S3 would.

Every GET returns the stored bytes with the stored Content-Type,
Content-Encoding and Cache-Control, an ETag and Content-Length, and the
CORS headers a browser viewer needs.  Single byte ranges are honoured.
QIDO query strings on ``studies`` and ``series`` are routed onto the site's
precomputed answers by the same table as the CloudFront Function
(:mod:`static_dicomweb.routing`); a filter whose answer does not exist (no
match) gets ``[]``, a page that does not exist a 404.  Other query strings
are ignored, as S3 does.  Objects are read through the site's store only
(:func:`~static_dicomweb.store.open_store`), so an S3 site is served like a
folder: ``serve s3://…`` is the local stand-in for CloudFront.

With a token, ``POST studies[/{S}]`` is STOW-RS (:mod:`static_dicomweb.stow`):
the token is checked from the headers before any body byte is read (a
``100 Continue`` is sent only to a client that may write), bodies come with a
Content-Length or chunked, are spooled to a temporary file (never held in
memory) and are refused with 413 beyond ``Limits.max_body``.  With
``viewer``, OHIF's build answers under ``/viewer/`` (:mod:`static_dicomweb.viewer`).

The HTTP server is uvicorn (HTTP/1.1 parsed by llhttp through httptools, on
uvloop): one event loop holds every connection, so a burst of a thousand
connections or a thousand idle keep-alive connections costs memory, not
threads, and request parsing is C.  Reading a local object is a few system
calls on the loop; S3 reads and STOW ingests run on thread pools.  What a
client may take is bounded by :class:`Limits`: the listen backlog, the number
of connections, the size of a request head and body, and a timeout for each
way a client can stall (idle keep-alive, a slow request head, a body that
stops coming).  Malformed requests get a 4xx answer, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import resource
import socket
import tempfile
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import parse_qs, unquote_to_bytes

from .errors import StaticDicomwebError, StoreError
from .routing import route
from .store import LocalStore, Store, open_store

if TYPE_CHECKING:
    from .viewer import Viewer

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS, POST",
    "Access-Control-Allow-Headers": "*",
    "Access-Control-Expose-Headers": "Content-Type, Content-Encoding, Content-Length, ETag",
    "Access-Control-Max-Age": "3600",
    # lets pages that are cross-origin isolated (COEP require-corp) embed site objects
    "Cross-Origin-Resource-Policy": "cross-origin",
}
_CORS = [(name.lower().encode(), value.encode()) for name, value in CORS.items()]
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_BAD_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})")
#: The longest key S3 holds, and the longest file name a file system holds (a key segment).
MAX_KEY, MAX_SEGMENT = 1024, 255
#: How much of a local object one write to the connection takes (a 512 x 512 x 16-bit frame and its
#: multipart head in one).
CHUNK = 1 << 20
VIEWER = "/viewer"


@dataclass(frozen=True)
class Limits:
    """What one client may take of the server (sizes in bytes, times in seconds)."""

    #: The largest request body (STOW-RS); 413 beyond, also for a chunked body once it grows past it.
    max_body: int = 2 * 1024**3
    #: A connection with no request in this time (a new one, or kept alive after an answer) is closed.
    idle_timeout: float = 15.0
    #: A request head (request line and header fields) must be whole within this time of its
    #: first byte: a head sent slowly (slowloris) is cut off.
    head_timeout: float = 30.0
    #: The longest wait for the next bytes of a request body; then 408 and the connection closes.
    body_timeout: float = 60.0
    #: How long the rest of a body is read and dropped after an answer that did not need it
    #: (401, 413, ...), so that a client still sending sees the answer rather than a reset
    #: (nginx's lingering close); then the connection closes.
    linger: float = 30.0
    #: The longest request target (414 beyond) and request head (431 beyond).
    max_target: int = 8192
    max_head: int = 65536
    #: Connections held at once; requests on connections beyond get 503.
    max_connections: int = 4096
    #: Connections the kernel queues before the server accepts them.
    backlog: int = 2048


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class SiteApp:
    """The ASGI application: a site's objects, STOW-RS and the viewer.

    Parameters
    ----------
    store
        The site.  A :class:`~static_dicomweb.store.LocalStore` is read on the
        event loop (its reads are a few system calls); any other store on a
        thread pool.
    stow_token
        Accept STOW-RS from clients presenting it (Bearer, or the HTTP Basic password).
    limits
        Body size and timeouts.
    viewer
        Answers ``/viewer/...`` (OHIF configured for this site).
    """

    def __init__(self, store: Store, *, stow_token: str | None = None, limits: Limits | None = None,
                 viewer: Viewer | None = None) -> None:
        self.store = store
        self.local = store if isinstance(store, LocalStore) else None
        self.stow_token = stow_token
        self.limits = limits or Limits()
        self.viewer = viewer
        self._reads = ThreadPoolExecutor(32, thread_name_prefix="serve-read")
        # ingests wait on the site's lock for aggregation; more threads would only wait longer
        self._ingests = ThreadPoolExecutor(4, thread_name_prefix="serve-stow")
        if stow_token is not None:  # the converter's imports, now rather than in the first STOW-RS
            from . import stow  # noqa: F401

    def close(self) -> None:
        """Stop the thread pools (running ingests finish first)."""
        self._reads.shutdown(wait=True, cancel_futures=True)
        self._ingests.shutdown(wait=True)

    async def _run(self, pool: ThreadPoolExecutor, func: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, func, *args)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one HTTP request (ASGI 3); log it at DEBUG in the common access-log form."""
        if scope["type"] != "http":
            return
        sent: list[int] = []

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                sent.append(message["status"])
            await send(message)

        try:
            await self._handle(scope, receive, sending)
        except Exception:
            log.exception("%s %s failed", scope["method"], scope.get("raw_path", b"").decode("latin-1"))
            if not sent:
                await _text(sending, 500, "internal error (logged by the server)\n", close=True)
            else:
                raise  # headers are out: uvicorn closes the connection
        finally:
            if log.isEnabledFor(logging.DEBUG):
                target = scope["raw_path"].decode("latin-1")
                if scope["query_string"]:
                    target += "?" + scope["query_string"].decode("latin-1")
                client = scope.get("client") or ("-", 0)
                log.debug('%s - "%s %s HTTP/%s" %s', client[0], scope["method"], target,
                          scope["http_version"], sent[0] if sent else "-")

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope["raw_path"]
        if _BAD_PERCENT.search(raw):
            await _text(send, 400, "bad percent-encoding in the request path\n")
            return
        try:
            path = unquote_to_bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            await _text(send, 400, "the request path is not UTF-8 once percent-decoded\n")
            return
        method = scope["method"]
        if self.viewer is not None and (path == VIEWER or path.startswith(VIEWER + "/")):
            await self._viewer(scope, send, path)
        elif method in ("GET", "HEAD"):
            await self._answer(scope, send, path, send_body=method == "GET")
        elif method == "OPTIONS":
            await _respond(send, 204, [(b"content-length", b"0"), *_CORS])
        elif method == "POST":
            await self._stow(scope, receive, send, path)
        else:
            await _respond(send, 405, [(b"allow", b"GET, HEAD, OPTIONS, POST"),
                                       (b"content-length", b"0"), *_CORS],
                           close=_unread_body(scope))

    # -- GET and HEAD ----------------------------------------------------------

    async def _answer(self, scope: Scope, send: Send, path: str, send_body: bool) -> None:
        key = path.lstrip("/")
        query = scope["query_string"].decode("latin-1")
        if query:
            with contextlib.suppress(ValueError):
                key = route(key, parse_qs(query))
        routed = key != path.lstrip("/")
        if not key or len(key) > MAX_KEY or any(len(part) > MAX_SEGMENT for part in key.split("/")):
            headers = None  # no key of a site is that long; a file system cannot even name it
        elif self.local is not None:
            headers = _headers(self.local, key)
        else:
            headers = await self._run(self._reads, _headers, self.store, key)
        if headers is None and routed and ".offset." not in key:
            # a filter that matches nothing; a missing page is a 404
            await _respond(send, 200, [(b"content-type", b"application/dicom+json"),
                                       (b"content-length", b"2"), *_CORS], b"[]" if send_body else b"")
            return
        if headers is None:
            await _not_found(send, key, send_body)
            return
        headers.pop("Content-Length", None)
        if self.local is not None:
            await _send_file(scope, send, self.local, key, headers, send_body)
            return
        try:
            body: bytes = await self._run(self._reads, self.store.get, key)
        except StoreError:
            await _not_found(send, key, send_body)
            return
        etag = hashlib.md5(body, usedforsecurity=False).hexdigest()
        await _send_object(scope, send, headers, etag, len(body), send_body,
                           lambda offset, size: body[offset:offset + size])

    # -- STOW-RS ---------------------------------------------------------------

    async def _stow(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        """STOW-RS: refuse from the headers alone, else spool the body to disk and ingest it."""
        from .stow import authorized, ingest, unsupported

        early = _unread_body(scope)  # an answer before the body: close where the client waits
        if self.stow_token is None:
            await _json(send, 405, {"error": "this site takes no writes "
                                             "(serve --stow-token enables STOW-RS)"}, close=early)
            return
        if not authorized(_header(scope, b"authorization"), self.stow_token):
            await _json(send, 401, {"error": "a valid token is required"}, close=early,
                        extra=[(b"www-authenticate", b'Basic realm="static-dicomweb STOW-RS"')])
            return
        parts = path.strip("/").split("/")
        if parts[0] != "studies" or len(parts) > 2:
            await _json(send, 404, {"error": "STOW-RS takes POST studies[/{study}]"}, close=early)
            return
        content_type = _header(scope, b"content-type") or ""
        refused = unsupported(content_type)
        if refused:
            await _json(send, refused[0], refused[1], close=early)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and int(declared) > self.limits.max_body:  # the parser checked digits
            await self._too_large(send, close=early)
            return
        with tempfile.TemporaryFile(prefix="static-dicomweb-stow-") as spool:
            if not await self._spool(receive, send, spool):
                return
            try:
                status, response = await self._run(self._ingests, ingest, self.store, spool,
                                                   content_type, parts[1] if len(parts) == 2 else None)
            except (StaticDicomwebError, OSError) as exc:
                log.exception("STOW-RS into %s failed", self.store.url)
                await _json(send, 500, {"error": {"vr": "LT", "Value": [f"not stored: {exc}"]}})
                return
        await _json(send, status, response)

    async def _spool(self, receive: Receive, send: Send, spool: BinaryIO) -> bool:
        """Write the request body to ``spool``; False when answered or gone instead."""
        total = 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), self.limits.body_timeout)
            except TimeoutError:
                await _text(send, 408, f"no body bytes for {self.limits.body_timeout:g} s\n", close=True)
                return False
            if message["type"] == "http.disconnect":
                log.info("STOW-RS: the client left before sending its whole body")
                return False
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.limits.max_body:
                await self._too_large(send, close=False)
                return False
            spool.write(chunk)
            if not message.get("more_body", False):
                spool.flush()
                return True

    async def _too_large(self, send: Send, close: bool) -> None:
        limit = self.limits.max_body
        await _json(send, 413, {"error": f"the body is larger than this server takes ({limit} bytes; "
                                         "serve --max-body)"}, close=close)

    # -- the viewer ----------------------------------------------------------------

    async def _viewer(self, scope: Scope, send: Send, path: str) -> None:
        assert self.viewer is not None
        if scope["method"] not in ("GET", "HEAD"):
            await _respond(send, 405, [(b"allow", b"GET, HEAD"), (b"content-length", b"0")],
                           close=_unread_body(scope))
            return
        if path == VIEWER:
            query = scope["query_string"]
            location = VIEWER.encode() + b"/" + (b"?" + query if query else b"")
            await _respond(send, 301, [(b"location", location), (b"content-length", b"0")])
            return
        answer = await self._run(self._reads, self.viewer.answer, path[len(VIEWER) + 1:])
        if answer is None:
            await _text(send, 404, f"{path}: not part of the viewer\n")
            return
        body, content_type = answer
        await _respond(send, 200, [(b"content-type", content_type.encode()),
                                   (b"content-length", str(len(body)).encode()),
                                   (b"cache-control", b"no-cache")],
                       body if scope["method"] == "GET" else b"")


def _headers(store: Store, key: str) -> dict[str, str] | None:
    """The object's headers, None when there is none (or the key cannot name one)."""
    try:
        return store.headers(key)
    except (StoreError, ValueError):
        return None


def _unread_body(scope: Scope) -> bool:
    """Whether the request announced a body and waits for ``100 Continue`` before sending it.

    Answering such a request without reading the body leaves the connection
    between requests in an unknown state: it is closed after the answer.  A
    body sent without waiting is read and dropped after an early answer (for
    up to ``Limits.linger`` seconds), so the client sees the answer, not a reset.
    """
    expect = _header(scope, b"expect")
    return expect is not None and expect.lower() == "100-continue"


async def _send_file(scope: Scope, send: Send, local: LocalStore, key: str, headers: dict[str, str],
                     send_body: bool) -> None:
    """A folder's object, read from an open file (its ETag from key, size and modification time)."""
    try:
        fd = os.open(local.path(key), os.O_RDONLY | os.O_CLOEXEC)
    except (OSError, StoreError):  # removed since its headers were read
        await _not_found(send, key, send_body)
        return
    try:
        stat = os.fstat(fd)
        etag = hashlib.md5(f"{key}:{stat.st_size}:{stat.st_mtime_ns}".encode(),
                           usedforsecurity=False).hexdigest()
        await _send_object(scope, send, headers, etag, stat.st_size, send_body,
                           lambda offset, size: os.pread(fd, size, offset))
    finally:
        os.close(fd)


async def _send_object(scope: Scope, send: Send, headers: dict[str, str], etag: str, size: int,
                       send_body: bool, read: Callable[[int, int], bytes]) -> None:
    """An object's answer: 200, 206 for a satisfiable single range, 416 for another one."""
    requested = _requested_range(_header(scope, b"range"), size)
    start, end = requested or (0, size)
    if requested is not None and start >= end:
        await _respond(send, 416, [(b"content-range", f"bytes */{size}".encode()),
                                   (b"content-length", b"0"), *_CORS])
        return
    out = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    out += [(b"etag", f'"{etag}"'.encode()), (b"accept-ranges", b"bytes"),
            (b"content-length", str(end - start).encode())]
    if requested is not None:
        out.append((b"content-range", f"bytes {start}-{end - 1}/{size}".encode()))
    await send({"type": "http.response.start", "status": 200 if requested is None else 206,
                "headers": out + _CORS})
    if not send_body or end == start:
        await send({"type": "http.response.body", "body": b""})
        return
    offset = start
    while offset < end:
        data = read(offset, min(CHUNK, end - offset))
        if not data:
            raise StoreError(f"{scope['raw_path']!r}: the object shrank while it was sent")
        offset += len(data)
        await send({"type": "http.response.body", "body": data, "more_body": offset < end})


def _requested_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The bytes ``[start, end)`` of ``size`` that a single-range ``Range`` header asks for.

    None answers the whole object: no header, an empty object, or a
    syntactically invalid range (ignored, as S3 does; RFC 9110 14.2).  A range
    with ``start >= end`` is unsatisfiable (416).
    """
    match = _RANGE.match(header or "")
    if not match or not size:
        return None
    first, last = match.groups()
    if not (first or last) or (first and last and int(last) < int(first)):
        return None
    if first:
        return int(first), min(size, int(last) + 1 if last else size)
    return max(0, size - int(last)), size


async def _respond(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes = b"",
                   close: bool = False) -> None:
    if close:
        headers = [*headers, (b"connection", b"close")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _text(send: Send, status: int, message: str, close: bool = False) -> None:
    data = message.encode()
    await _respond(send, status, [(b"content-type", b"text/plain; charset=utf-8"),
                                  (b"content-length", str(len(data)).encode()), *_CORS], data, close)


async def _json(send: Send, status: int, body: object, *, close: bool = False,
                extra: list[tuple[bytes, bytes]] | None = None) -> None:
    from .dicomjson import encode

    data = encode(body)
    await _respond(send, status, [(b"content-type", b"application/dicom+json"),
                                  (b"content-length", str(len(data)).encode()), *_CORS, *(extra or [])],
                   data, close)


async def _not_found(send: Send, key: str, send_body: bool) -> None:
    body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchKey</Code>"
            f"<Message>The specified key does not exist.</Message><Key>{escape(key)}</Key>"
            f"</Error>").encode()
    await _respond(send, 404, [(b"content-type", b"application/xml"),
                               (b"content-length", str(len(body)).encode()), *_CORS],
                   body if send_body else b"")


def _protocol(limits: Limits) -> type[asyncio.Protocol]:
    """The httptools protocol of uvicorn with the limits it lacks: head size and head time."""
    from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

    class RefusedError(Exception):
        """Raised in a parser callback to stop parsing a request that was answered."""

    class LimitedProtocol(HttpToolsProtocol):
        """Adds a deadline for each request head, a size limit for it, and a bound on dropped bodies."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._timer: asyncio.TimerHandle | None = None
            self._head_size = 0
            self._refused = False
            self._linger_until: float | None = None

        def _arm(self, seconds: float) -> None:
            self._disarm()
            self._timer = self.loop.call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _expired(self) -> None:
            self._timer = None
            if self.cycle is not None and not self.cycle.response_complete:
                return  # a request is being answered: its body has its own timeout
            if not self.transport.is_closing():
                self.transport.close()

        def _refuse(self, status: int, message: str) -> None:
            self._refused = True
            self._disarm()
            data = message.encode()
            self.transport.write(b"".join([
                STATUS_LINE[status], b"content-type: text/plain; charset=utf-8\r\n",
                b"content-length: ", str(len(data)).encode(), b"\r\nconnection: close\r\n\r\n", data]))
            self.transport.close()
            raise RefusedError(message)

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm(limits.idle_timeout)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if not self._refused:
                super().data_received(data)

        def send_400_response(self, msg: str) -> None:
            if not self._refused:  # else the request was answered (414, 431) and parsing stopped
                super().send_400_response(msg)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_size = 0
            self._arm(limits.head_timeout)

        def on_url(self, url: bytes) -> None:
            super().on_url(url)
            if len(self.url) > limits.max_target:
                self._refuse(414, f"the request target is longer than {limits.max_target} bytes\n")

        def on_header(self, name: bytes, value: bytes) -> None:
            self._head_size += len(name) + len(value) + 4
            if self._head_size > limits.max_head:
                self._refuse(431, f"the request head is larger than {limits.max_head} bytes\n")
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            if self.cycle is not None and self.cycle.response_complete:
                # answered before its body was read (401, 413, ...): the rest is read and dropped
                # for a while, so that a client still sending sees the answer, not a reset
                now = self.loop.time()
                if self._linger_until is None:
                    self._linger_until = now + limits.linger
                if now > self._linger_until:
                    self.transport.close()
                else:
                    self._arm(min(limits.body_timeout, self._linger_until - now))
                return
            super().on_body(body)

        def on_message_complete(self) -> None:
            super().on_message_complete()
            if self._linger_until is not None:  # the dropped body is over: the connection is idle
                self._linger_until = None
                self._arm(limits.idle_timeout)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm(limits.idle_timeout)

    return LimitedProtocol


class Server:
    """A bound, listening ``serve``: run it with :meth:`serve_forever`, stop it with :meth:`shutdown`.

    The methods are those of :class:`socketserver.BaseServer` that tools and tests use.
    """

    def __init__(self, app: SiteApp, sock: socket.socket, limits: Limits) -> None:
        import uvicorn

        self.app = app
        self.socket = sock
        self.server_address: tuple[str, int] = sock.getsockname()[:2]
        config = uvicorn.Config(
            app, http=_protocol(limits), interface="asgi3", lifespan="off", log_config=None,
            access_log=False, proxy_headers=False, server_header=False,
            headers=[("server", "static-dicomweb")], backlog=limits.backlog,
            timeout_keep_alive=limits.idle_timeout,  # type: ignore[arg-type]  # a float works
            limit_concurrency=limits.max_connections, timeout_graceful_shutdown=10)
        self._server = uvicorn.Server(config)
        self._stopped = threading.Event()

    @property
    def url(self) -> str:
        """``http://host:port``."""
        return base_url(self)

    def serve_forever(self) -> None:
        """Answer requests until :meth:`shutdown` (or SIGINT/SIGTERM in the main thread)."""
        try:
            self._server.run(sockets=[self.socket])
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop serving and wait for :meth:`serve_forever` to return (answers in progress finish)."""
        self._server.should_exit = True
        self._stopped.wait(60)

    def server_close(self) -> None:
        """Close the listening socket and the thread pools."""
        self.socket.close()
        self.app.close()


def _raise_open_files_limit() -> None:
    """Raise the soft limit on open files to the hard limit: each connection is one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY
                                                        else max(soft, 65536), hard))


def make_server(root: str, host: str = "127.0.0.1", port: int = 8080,
                stow_token: str | None = None, *, endpoint_url: str | None = None,
                limits: Limits | None = None, viewer: bool = False) -> Server:
    """A server for the site at ``root`` (a folder or ``s3://bucket/prefix``), bound and listening.

    Parameters
    ----------
    root
        The site.
    host, port
        Where to listen (port 0 picks a free one).
    stow_token
        Accept ``POST studies[/{S}]`` (STOW-RS) from clients that present it
        (Bearer, or as the HTTP Basic password).
    endpoint_url
        The S3 endpoint of an ``s3://`` site (else boto3's own ``AWS_ENDPOINT_URL``).
    limits
        Body size, timeouts and connection limits (:class:`Limits`).
    viewer
        Also answer ``/viewer/`` with OHIF configured for this site.

    Raises
    ------
    StoreError
        If the site's folder or bucket does not exist.
    ViewerNotInstalled
        With ``viewer`` where OHIF's build is not installed.
    """
    store = open_store(root, endpoint_url=endpoint_url)
    if not store.exists():
        raise StoreError(f"{root}: no such site folder" if isinstance(store, LocalStore)
                         else f"{root}: no such bucket, or no permission to read it")
    limits = limits or Limits()
    the_viewer = None
    if viewer:
        from .viewer import Viewer

        the_viewer = Viewer.from_default("/")  # the site is this server's root, whatever its name
    _raise_open_files_limit()
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(limits.backlog)
    except OSError:
        sock.close()
        raise
    app = SiteApp(store, stow_token=stow_token, limits=limits, viewer=the_viewer)
    return Server(app, sock, limits)


def serve_in_thread(root: str, host: str = "127.0.0.1", port: int = 0,
                    stow_token: str | None = None, **options: Any) -> tuple[Server, str]:
    """Start a server in a daemon thread; returns it and its base URL (for tests and tools).

    ``options`` are :func:`make_server`'s keyword arguments.  The socket
    listens before this returns, so requests may be sent at once.
    """
    server = make_server(root, host, port, stow_token, **options)
    threading.Thread(target=server.serve_forever, daemon=True, name="static-dicomweb-serve").start()
    return server, base_url(server)


def base_url(server: Server) -> str:
    """``http://host:port`` of a server."""
    host, port = server.server_address[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def viewer_url(server: Server) -> str:
    """Where the viewer of a server started with ``viewer=True`` answers."""
    return f"{base_url(server)}{VIEWER}/"
