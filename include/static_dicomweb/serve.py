"""``serve``: a site in a folder over HTTP, answering exactly as S3 would.

Every GET returns the stored bytes with the stored Content-Type,
Content-Encoding and Cache-Control, an ETag and Content-Length, and the
CORS headers a browser viewer needs.  Single byte ranges are honoured.
QIDO query strings on ``studies`` and ``series`` are routed onto the site's
precomputed answers by the same table as the CloudFront Function
(:mod:`static_dicomweb.routing`); a filter whose answer does not exist (no
match) gets ``[]``, a page that does not exist a 404.  Other query strings
are ignored, as S3 does.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from html import escape
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from .errors import StoreError
from .routing import route
from .store import LocalStore

log = logging.getLogger(__name__)

CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS, POST",
    "Access-Control-Allow-Headers": "*",
    "Access-Control-Expose-Headers": "Content-Type, Content-Encoding, Content-Length, ETag",
    "Access-Control-Max-Age": "3600",
    # lets pages that are cross-origin isolated (COEP require-corp) embed site objects
    "Cross-Origin-Resource-Policy": "cross-origin",
}
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class SiteHandler(BaseHTTPRequestHandler):
    """Maps a request path to a key of the site's store and answers with its object."""

    store: LocalStore
    stow_token: str | None = None
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server_version = "static-dicomweb"

    def log_message(self, format: str, *args: object) -> None:
        """Access log lines go to ``logging`` at debug level, not to standard error."""
        log.debug("%s %s", self.address_string(), format % args)

    def _key(self) -> tuple[str, bool]:
        """The key a request maps to, and whether it is a routed query answer."""
        parts = urlsplit(self.path)
        path = unquote(parts.path).lstrip("/")
        key = route(path, parse_qs(parts.query)) if parts.query else path
        return key, key != path

    def do_OPTIONS(self) -> None:
        """CORS preflight."""
        self.send_response(HTTPStatus.NO_CONTENT)
        for name, value in CORS.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        """STOW-RS: ``POST studies`` or ``POST studies/{S}``, with the token; else refused."""
        from .stow import authorized, ingest

        path = unquote(urlsplit(self.path).path).strip("/").split("/")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.stow_token is None:
            self._json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "this site takes no writes "
                                                                "(serve --stow-token enables STOW-RS)"})
            return
        if not authorized(self.headers.get("Authorization"), self.stow_token):
            self._json(HTTPStatus.UNAUTHORIZED, {"error": "a valid token is required"},
                       {"WWW-Authenticate": 'Basic realm="static-dicomweb STOW-RS"'})
            return
        if path[0] != "studies" or len(path) > 2:
            self._json(HTTPStatus.NOT_FOUND, {"error": "STOW-RS takes POST studies[/{study}]"})
            return
        status, response = ingest(self.store, body, self.headers.get("Content-Type", ""),
                                  path[1] if len(path) == 2 else None)
        self._json(HTTPStatus(status), response)

    def _json(self, status: HTTPStatus, body: object, extra: dict[str, str] | None = None) -> None:
        from .dicomjson import encode

        data = encode(body)
        self.send_response(status)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in {**CORS, **(extra or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_HEAD(self) -> None:
        """Headers only."""
        self._answer(send_body=False)

    def do_GET(self) -> None:
        """The object's bytes, as stored."""
        self._answer(send_body=True)

    def _empty_answer(self, send_body: bool) -> None:
        """A query that matches nothing: an empty DICOM JSON array."""
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", "2")
        for name, value in CORS.items():
            self.send_header(name, value)
        self.end_headers()
        if send_body:
            self.wfile.write(b"[]")

    def _not_found(self, key: str, send_body: bool) -> None:
        body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchKey</Code>"
                f"<Message>The specified key does not exist.</Message><Key>{escape(key)}</Key>"
                f"</Error>").encode()
        self.send_response(HTTPStatus.NOT_FOUND)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        for name, value in CORS.items():
            self.send_header(name, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _answer(self, send_body: bool) -> None:
        key, routed = self._key()
        try:
            headers = self.store.headers(key) if key else None
        except (StoreError, ValueError):
            headers = None
        if headers is None and routed and ".offset." not in key:
            self._empty_answer(send_body)  # a filter that matches nothing; a missing page is a 404
            return
        if headers is None:
            self._not_found(key, send_body)
            return
        path = self.store.path(key)
        with open(path, "rb") as body:
            stat = os.fstat(body.fileno())
            size = stat.st_size
            start, end = 0, size
            status = HTTPStatus.OK
            match = _RANGE.match(self.headers.get("Range", ""))
            first, last = match.groups() if match else ("", "")
            if match and size and (first or last) and not (first and last and int(last) < int(first)):
                # a syntactically invalid range is ignored, as S3 does (RFC 9110 14.2)
                if first:
                    start, end = int(first), min(size, int(last) + 1 if last else size)
                else:
                    start, end = max(0, size - int(last)), size
                if start >= end:
                    self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    for name, value in CORS.items():
                        self.send_header(name, value)
                    self.end_headers()
                    return
                status = HTTPStatus.PARTIAL_CONTENT
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            etag = hashlib.md5(f"{key}:{size}:{stat.st_mtime_ns}".encode(),
                               usedforsecurity=False).hexdigest()
            self.send_header("ETag", f'"{etag}"')
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(end - start))
            if status == HTTPStatus.PARTIAL_CONTENT:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
            for name, value in CORS.items():
                self.send_header(name, value)
            self.end_headers()
            if send_body and end > start:
                self.wfile.flush()
                self.connection.sendfile(body, start, end - start)


def make_server(root: str, host: str = "127.0.0.1", port: int = 8080,
                stow_token: str | None = None) -> ThreadingHTTPServer:
    """An HTTP server for the site at ``root`` (port 0 picks a free one).

    With ``stow_token``, ``POST studies[/{S}]`` (STOW-RS) is accepted from
    clients that present it (Bearer, or as the HTTP Basic password).
    """
    store = LocalStore(root)
    if not store.root.is_dir():
        raise StoreError(f"{root}: no such site folder")
    handler = type("BoundSiteHandler", (SiteHandler,), {"store": store, "stow_token": stow_token})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve_in_thread(root: str, host: str = "127.0.0.1", port: int = 0,
                    stow_token: str | None = None) -> tuple[ThreadingHTTPServer, str]:
    """Start a server in a daemon thread; returns it and its base URL (for tests and tools)."""
    server = make_server(root, host, port, stow_token)
    threading.Thread(target=server.serve_forever, daemon=True, name="static-dicomweb-serve").start()
    return server, base_url(server)


def base_url(server: ThreadingHTTPServer) -> str:
    """``http://host:port`` of a running server."""
    host, port = server.server_address[:2]
    return f"http://{host!s}:{port}"
