"""Serve the OHIF viewer build (ohif-dist/) at the root of its own server, configured for a site elsewhere.

    python clients/ohif/serve_ohif.py --site-url http://127.0.0.1:8080 [--port 3000]
        [--dist clients/ohif/ohif-dist] [--isolation] [--log FILE]

The answers are those of ``static_dicomweb.viewer.Viewer`` mounted at ``/``: ``/app-config.js`` is
generated (one DICOMweb data source on --site-url), every other path is a file of the build, and
any path without an extension that is not (OHIF's routes: /viewer, /local, ...) answers
index.html. ``static-dicomweb serve SITE --viewer`` serves the same build under ``/viewer/`` of the
site's own server; this script is for a viewer on another origin than the site (the cross-origin
case, CORS) and, with --isolation, for a cross-origin isolated page (COOP same-origin, COEP
require-corp), to check that the site still loads under them. Prints "OHIF http://127.0.0.1:PORT/"
once it listens.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from static_dicomweb.viewer import Viewer

HERE = Path(__file__).resolve().parent
ISOLATION = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
}


def make_server(dist: Path, site_url: str, host: str = "127.0.0.1", port: int = 0,
                isolation: bool = False, log: Path | None = None) -> ThreadingHTTPServer:
    """An HTTP server for the OHIF build in ``dist`` configured for the site at ``site_url``."""
    if not (dist / "index.html").is_file():
        raise SystemExit(f"serve_ohif: {dist}/index.html is missing: run clients/ohif/setup.sh")
    viewer = Viewer(dist, site_url, mount="/")
    lock = threading.Lock()
    logfile = open(log, "a", buffering=1) if log else None  # noqa: SIM115 - lives as long as the server

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            if logfile:
                with lock:
                    logfile.write(f"{self.address_string()} {format % args}\n")

        def _send(self, send_body: bool) -> None:
            answer = viewer.answer(unquote(urlsplit(self.path).path).lstrip("/"))
            body, kind = answer or (b"not found\n", "text/plain; charset=utf-8")
            self.send_response(HTTPStatus.OK if answer else HTTPStatus.NOT_FOUND)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-cache")
            if isolation:
                for name, value in ISOLATION.items():
                    self.send_header(name, value)
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def do_GET(self) -> None:
            self._send(send_body=True)

        def do_HEAD(self) -> None:
            self._send(send_body=False)

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def server_close(self) -> None:
            super().server_close()
            if logfile:
                logfile.close()

    return Server((host, port), Handler)


def main(argv: list[str] | None = None) -> int:
    """Serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site-url", required=True, help="the DICOMweb root of the site")
    parser.add_argument("--dist", type=Path, default=HERE / "ohif-dist")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--isolation", action="store_true", help="send COOP/COEP (cross-origin isolation)")
    parser.add_argument("--log", type=Path, help="append an access log here")
    args = parser.parse_args(argv)
    server = make_server(args.dist, args.site_url, args.host, args.port, args.isolation, args.log)
    host, port = server.server_address[:2]
    print(f"OHIF http://{host!s}:{port}/", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
