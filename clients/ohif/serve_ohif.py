"""Serve the OHIF viewer build (ohif-dist/) on 127.0.0.1 with app-config.js pointing at a site.

    python clients/ohif/serve_ohif.py --site-url http://127.0.0.1:8080 [--port 3000]
        [--dist clients/ohif/ohif-dist] [--isolation] [--log FILE] [--config FILE]

/app-config.js is this folder's app-config.js with __DICOMWEB_ROOT__ replaced by --site-url;
every other path is a file of the build, and any path that is not (OHIF's routes: /viewer,
/local, ...) answers index.html, as OHIF's own _redirects does. --isolation adds the headers
that make the page cross-origin isolated (COOP same-origin, COEP require-corp), to check that
the site still loads under them. Standard library only; prints "OHIF http://127.0.0.1:PORT/"
once it listens.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import mimetypes
import sys
import threading
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

HERE = Path(__file__).resolve().parent
ISOLATION = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
}
TYPES = {".wasm": "application/wasm", ".mjs": "text/javascript", ".js": "text/javascript",
         ".json": "application/json", ".svg": "image/svg+xml", ".woff2": "font/woff2"}


def make_server(dist: Path, site_url: str, host: str = "127.0.0.1", port: int = 0,
                isolation: bool = False, log: Path | None = None,
                config_file: Path = HERE / "app-config.js") -> ThreadingHTTPServer:
    """An HTTP server for the OHIF build in ``dist`` configured for the site at ``site_url``."""
    if not (dist / "index.html").is_file():
        raise SystemExit(f"serve_ohif: {dist}/index.html is missing: run clients/ohif/setup.sh")
    config = config_file.read_text().replace("__DICOMWEB_ROOT__", site_url.rstrip("/"))
    lock = threading.Lock()
    logfile = open(log, "a", buffering=1) if log else None  # noqa: SIM115 - lives as long as the server

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            self.extensions_map = {**mimetypes.types_map, **TYPES}
            super().__init__(*args, directory=str(dist), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            if logfile:
                with lock:
                    logfile.write(f"{self.address_string()} {format % args}\n")

        def end_headers(self) -> None:
            self.send_header("Cache-Control", "no-cache")
            if isolation:
                for name, value in ISOLATION.items():
                    self.send_header(name, value)
            super().end_headers()

        def send_head(self):  # type: ignore[no-untyped-def]
            path = unquote(urlsplit(self.path).path)
            if path == "/app-config.js":
                body = config.encode()
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", "text/javascript")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                return io.BytesIO(body)
            target = Path(self.translate_path(self.path))
            if not target.is_file():
                self.path = "/index.html"  # the single-page app's routes
            return super().send_head()

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
    parser.add_argument("--config", type=Path, default=HERE / "app-config.js",
                        help="the app-config.js to serve (__DICOMWEB_ROOT__ is replaced)")
    args = parser.parse_args(argv)
    server = make_server(args.dist, args.site_url, args.host, args.port, args.isolation, args.log,
                         args.config)
    host, port = server.server_address[:2]
    print(f"OHIF http://{host!s}:{port}/", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
