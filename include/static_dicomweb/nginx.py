"""``nginx-config``: an nginx configuration that serves a site folder as S3 + CloudFront serve it.

nginx reads the portable site folder (mapping 3, ``docs/site-layout.md``)
with a few rules, not one per object, so objects written after it started
(``convert``, STOW) are served at once, without a reload:

- A request path is a key; a regex ``location`` per key depth maps it onto
  its file by the store's rule (the first five segments are folders, the rest
  are joined with ``+``, and ``.body`` is appended).  Only names of letters,
  digits, ``_``, ``-`` and dots, not starting with a dot, match: hidden files
  (the mapping record, the writers' lock, temporary files) and anything that
  is not a ``.body`` file (``.meta`` user metadata) are never reachable, and
  a path that is not a key gets S3's ``NoSuchKey`` 404.
- A raw path holding an encoded dot, slash or backslash (``%2e``, ``%2f``,
  ``%5c``), a NUL, a backslash, ``//`` or a segment starting with a dot is
  refused with 400 before any location is chosen; nginx itself refuses
  ``..`` that would climb above the root.
- njs (``libnginx-mod-http-js``) derives each object's Content-Type,
  Content-Encoding and Cache-Control from its key and its first bytes, as
  :func:`static_dicomweb.keys.headers_for` does, and adds its
  ``x-amz-meta-*`` from the ``.meta`` file; QIDO queries on ``studies`` and
  ``series`` are routed by the CloudFront Function's own code with the one
  table of :mod:`static_dicomweb.routing`.
- ``POST studies[/{S}]`` (STOW-RS) goes to the upstream ``serve
  --stow-token`` as it arrives, a chunked body chunked over HTTP/1.1; with
  ``buffer_stow`` nginx takes each body whole first and hands it on with its
  length (for an upstream that reads no chunked bodies).

Everything nginx writes (pid, logs, request-body and proxy temporary files)
goes under its prefix, so ``nginx -p DIR -c DIR/nginx.conf`` runs it in the
foreground as any user.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from . import __version__
from .errors import StaticDicomwebError
from .routing import edge_function
from .serve import CORS
from .store import BODY, FOLDERS, JOIN, META

#: Where Debian (libnginx-mod-http-js) and nginx.org's packages put the njs module.
NJS_MODULES = ("/usr/lib/nginx/modules/ngx_http_js_module.so",
               "/usr/lib64/nginx/modules/ngx_http_js_module.so",
               "/etc/nginx/modules/ngx_http_js_module.so")
#: The njs modules' file names, beside nginx.conf (nginx resolves them against its conf folder):
#: every object's headers, and the query routing (imported only where queries are answered).
JS_FILE = "static-dicomweb.js"
ROUTE_FILE = "static-dicomweb-route.js"
CONF_FILE = "nginx.conf"
#: Keys are at most eight segments deep (a frame, a bulk data element); one more to spare.
MAX_SEGMENTS = 9
#: A STOW-RS request may carry a whole series.
MAX_BODY = "4g"
#: One key segment: what keys are made of (letters, digits, ``_``, ``-``, dots; no leading dot).
_SEGMENT = r"[0-9A-Za-z_-][0-9A-Za-z_.-]*"
#: A raw request path that is refused outright (before the query string).  Four backslashes:
#: nginx's quoted string makes them two, PCRE's one literal backslash.
_REFUSED = r"~*^[^?]*(?:%2e|%2f|%5c|%00|\\\\|//|/\.)"
#: Characters a path or address may not hold in the configuration (quoting, variables, blocks).
_UNSAFE = re.compile(r"[\"'\\$;{}\s#]")
#: How the STOW-RS location takes a request body: streamed on (default), or whole first.
_STREAM = ("            # the body goes on as it arrives, a chunked one chunked (serve spools it)\n"
           "            proxy_request_buffering off;\n")
_BUFFER = ("            # nginx takes the whole body (chunked or not, spooled under the prefix) and\n"
           "            # hands it on with its length, for an upstream that reads no chunked bodies\n"
           "            proxy_request_buffering on;\n")


class NginxConfigError(StaticDicomwebError):
    """An argument of ``nginx-config`` cannot go into a configuration."""


@dataclass(frozen=True)
class NginxOptions:
    """What the configuration is built from.

    Parameters
    ----------
    site
        The site folder (made absolute).
    listen
        ``HOST:PORT`` (``[::1]:PORT`` for IPv6) to listen on.
    upstream
        ``http://host:port`` of ``serve --stow-token`` for STOW-RS; None: the
        site takes no writes (a POST gets 405, as ``serve`` without a token).
    user
        The user nginx's workers run as when it is started by root (None:
        nginx's default, ``nobody``); ignored by nginx when started by anyone else.
    workers
        ``worker_processes`` (``auto``: one per core).
    njs_module
        The njs dynamic module to load (None: the first of :data:`NJS_MODULES`
        that exists, else Debian's path).
    stdio_logs
        The error log on standard error and the access log on standard output
        (a container's logs) rather than ``error.log`` and ``access.log`` in the prefix.
    buffer_stow
        Take each STOW-RS body whole first (spooled under the prefix) and hand
        it on with its length, instead of passing it on as it arrives (a
        chunked body chunked): for an upstream that reads no chunked bodies.
    """

    site: str
    listen: str
    upstream: str | None = None
    user: str | None = None
    workers: str = "auto"
    njs_module: str | None = None
    buffer_stow: bool = False
    stdio_logs: bool = False


def _safe(value: str, what: str) -> str:
    if not value or _UNSAFE.search(value):
        raise NginxConfigError(f"{what} {value!r}: nginx-config takes no quotes, backslashes, '$', "
                               "';', braces, '#' or white space here")
    return value


def _listen(value: str) -> str:
    match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[0-9A-Za-z.-]+):([0-9]{1,5})", value)
    if match is None or not 0 < int(match.group(2)) < 65536:
        raise NginxConfigError(f"--listen {value!r}: expected HOST:PORT (e.g. 127.0.0.1:8080, "
                               "0.0.0.0:80, [::1]:8080) with a port from 1 to 65535")
    return value


def _upstream(value: str) -> str:
    parts = urlsplit(value)
    if (parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/")
            or parts.query or parts.fragment or parts.username or parts.password):
        raise NginxConfigError(f"--upstream {value!r}: expected http://HOST:PORT of serve --stow-token "
                               "(no path: serve answers STOW-RS at its root)")
    return _safe(f"{parts.scheme}://{parts.netloc}", "--upstream")


def _njs_module(path: str | None) -> str:
    if path is not None:
        return _safe(path, "--njs-module")
    return next((p for p in NJS_MODULES if Path(p).is_file()), NJS_MODULES[0])


def _file_locations(site: str) -> list[str]:
    """One regex location per key depth: the key's file by the store's rule, and its headers."""
    out = []
    # keys of up to FOLDERS + 1 segments are their own paths; deeper ones join the rest with "+"
    plain = f"{_SEGMENT}(?:/{_SEGMENT}){{0,{FOLDERS}}}"
    out.append((f"^/({plain})$", f"$1{BODY}"))
    deep = f"{_SEGMENT}(?:/{_SEGMENT}){{{FOLDERS}}}"
    for extra in range(1, MAX_SEGMENTS - FOLDERS):
        regex = f"^/({deep})" + f"/({_SEGMENT})" * extra + "$"
        file = "$1" + "".join(f"{JOIN}${n}" for n in range(2, extra + 2)) + BODY
        out.append((regex, file))
    return [f'        location ~ "{regex}" {{\n'
            f'            alias "{site}/{file}";\n'
            f"{_object(site, file[: -len(BODY)])}"
            f"        }}\n" for regex, file in out]


def _object(site: str, stem: str) -> str:
    """What every object's location holds: the test for its ``.meta`` file, the header filter."""
    return ('            set $sdw_meta "";\n'
            f'            if (-f "{site}/{stem}{META}") {{\n'
            f'                set $sdw_meta "{site}/{stem}{META}";\n'
            "            }\n"
            "            js_header_filter sdw.headers;\n")


def _query_location(site: str, resource: str) -> str:
    """The location of ``/studies`` or ``/series``: with a query, its precomputed answer; else the object."""
    return (f"        location = /{resource} {{\n"
            f"            js_import sdwr from {ROUTE_FILE};\n"
            "            if ($args) {\n"
            "                rewrite ^ $sdw_route? last;\n"
            "            }\n"
            f'            alias "{site}/{resource}{BODY}";\n'
            f"{_object(site, resource)}"
            "        }\n")


def config(options: NginxOptions) -> str:
    """The nginx configuration (``nginx.conf``) for ``options``.

    It imports :data:`JS_FILE` and :data:`ROUTE_FILE` from its own folder: :func:`write` puts
    all three there.

    Raises
    ------
    NginxConfigError
        For a site path, address, upstream or module path that cannot go into a configuration.
    """
    site = _safe(str(Path(options.site).resolve()), "site folder")
    if not Path(site).is_dir():
        raise NginxConfigError(f"{site}: no such site folder")
    listen = _listen(options.listen)
    upstream = _upstream(options.upstream) if options.upstream else None
    user = f"user {_safe(options.user, '--user')};\n" if options.user else ""
    workers = _safe(options.workers, "--workers")
    cors = "".join(f'        add_header {name} "{value}" always;\n' for name, value in CORS.items())
    hide = "".join(f"            proxy_hide_header {name};\n" for name in CORS)
    if upstream:
        stow = (f"            proxy_pass {upstream};\n"
                "            proxy_http_version 1.1;\n"
                '            proxy_set_header Connection "";\n'
                "            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
                "            proxy_set_header X-Forwarded-Proto $scheme;\n"
                f"{_BUFFER if options.buffer_stow else _STREAM}"
                "            proxy_read_timeout 600s;\n"
                "            proxy_send_timeout 600s;\n"
                f"{hide}")
    else:
        stow = ("            default_type application/dicom+json;\n"
                "            return 405 '{\"error\":\"this site takes no writes (nginx-config --upstream "
                "forwards STOW-RS to serve --stow-token)\"}';\n")
    return f"""\
# static-dicomweb {__version__}: nginx serves the site folder {site}
# as S3 + CloudFront serve it (docs/nginx.md). Generated by `static-dicomweb nginx-config`;
# regenerate rather than edit. Run it in the foreground, as any user:
#     nginx -p DIR -c DIR/{CONF_FILE}    (DIR holds this file, {JS_FILE} and {ROUTE_FILE})
# pid, logs and temporary files go under DIR. Objects added to the site later are served at
# once: the rules below map every key onto its file; nothing lists the site's objects.
load_module {_njs_module(options.njs_module)};
{user}worker_processes {workers};
daemon off;
pid nginx.pid;
error_log {"stderr" if options.stdio_logs else "error.log"} warn;

events {{
    worker_connections 1024;
}}

http {{
    access_log {"/dev/stdout combined" if options.stdio_logs else "access.log combined"} buffer=64k flush=1s;
    client_body_temp_path client_body_temp;
    proxy_temp_path proxy_temp;
    fastcgi_temp_path fastcgi_temp;
    uwsgi_temp_path uwsgi_temp;
    scgi_temp_path scgi_temp;

    # njs sets every object's Content-Type from its key and first bytes
    types {{ }}
    default_type application/octet-stream;
    charset off;
    gzip off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 10000;
    server_tokens off;
    autoindex off;
    # a missing key is an answer (S3's NoSuchKey), not an error worth a log line
    log_not_found off;
    # one byte range, as S3 takes: a multi-range request gets the whole object
    max_ranges 1;
    client_max_body_size {MAX_BODY};
    client_body_buffer_size 1m;

    js_import sdw from {JS_FILE};
    js_set $sdw_route sdwr.routeUri;

    # a raw path with an encoded dot, slash or backslash, a NUL, '//' or a dot segment
    map $request_uri $sdw_refused {{
        default 0;
        "{_REFUSED}" 1;
    }}
    # STOW-RS: POST studies or studies/{{S}}
    map "$request_method $uri" $sdw_stow {{
        default 0;
        "~^POST /studies(?:/[0-9.]+)?$" 1;
    }}

    server {{
        listen {listen} default_server;
        server_name _;
        root "{site}";

{cors}
        error_page 404 = @sdw_missing;
        error_page 418 = @sdw_stow;
        if ($sdw_refused) {{
            return 400;
        }}
        if ($request_method = OPTIONS) {{
            return 204;
        }}
        if ($sdw_stow) {{
            return 418;
        }}

        # QIDO: a query on studies or series is routed onto its precomputed answer
{_query_location(site, "studies")}{_query_location(site, "series")}
        # every other key: its file, by the store's rule
{"".join(_file_locations(site))}
        # anything else is no key
        location / {{
            return 404;
        }}

        location @sdw_missing {{
            js_content sdw.missing;
        }}

        location @sdw_stow {{
{stow}        }}
    }}
}}
"""


def njs_modules() -> dict[str, str]:
    """The njs modules by file name: the headers, and the CloudFront Function's routing code."""
    here = Path(__file__).parent
    return {JS_FILE: (here / "nginx_sdw.js").read_text(),
            ROUTE_FILE: edge_function() + "\n" + (here / "nginx_sdw_route.js").read_text()}


def write(options: NginxOptions, out: str | Path) -> Path:
    """Write ``nginx.conf`` and its njs modules into ``out`` (created); returns the config's path."""
    folder = Path(out)
    text = config(options)
    folder.mkdir(parents=True, exist_ok=True)
    for name, module in njs_modules().items():
        (folder / name).write_text(module)
    conf = folder / CONF_FILE
    conf.write_text(text)
    return conf
