"""The ``static-dicomweb`` command line: convert, serve, validate, publish, sample, ….

Exit codes (the same for every verb):

0  success: every input converted / the site conforms
1  done, with findings: some inputs were rejected (the rest is in the site and
   the report lists each rejected file and why), or the site does not conform
2  usage error (bad arguments)
3  failure: the destination or site could not be written or read
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from . import __version__
from .errors import StaticDicomwebError

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE, EXIT_FAILURE = 0, 1, 2, 3
log = logging.getLogger("static_dicomweb")


def _convert(args: argparse.Namespace) -> int:
    from .convert import convert
    from .store import open_store

    store = open_store(args.out, endpoint_url=args.endpoint_url)
    result = convert(args.inputs, store, profile=args.profile, workers=args.workers,
                     progress=not args.quiet and sys.stderr.isatty())
    series = len({(w.study, w.series) for w in result.written})
    print(f"converted {len(result.written)} instances in {series} series into {store.url} "
          f"in {result.seconds:.1f} s", file=sys.stderr)
    for rejected in result.rejected:
        print(f"rejected {rejected.path}: {rejected.reason}", file=sys.stderr)
    if result.rejected:
        print(f"{len(result.rejected)} file(s) rejected; listed in _site/conversion-report.json",
              file=sys.stderr)
    return EXIT_OK if result.ok else EXIT_FINDINGS


def _serve(args: argparse.Namespace) -> int:
    from .serve import Limits, base_url, make_server, viewer_url

    token = args.stow_token or os.environ.get("STATIC_DICOMWEB_STOW_TOKEN") or None
    server = make_server(args.dest, args.host, args.port, token, endpoint_url=args.endpoint_url,
                         limits=Limits(max_body=args.max_body), viewer=args.viewer)
    writes = f"STOW-RS on (token required, bodies up to {args.max_body} bytes)" if token else "read-only"
    # stop on Ctrl-C and on SIGTERM (docker stop, systemd), also when started with SIGINT ignored
    # (a background job of a non-interactive shell): Python then installs no handler of its own
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(f"serving {args.dest} at {base_url(server)}/ (DICOMweb root; {writes}; Ctrl-C stops)",
          file=sys.stderr)
    if args.viewer:
        print(f"viewer: {viewer_url(server)}", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return EXIT_OK


def _size(text: str) -> int:
    """A byte count with an optional K, M or G suffix (powers of 1024): ``--max-body 500M``."""
    number, unit = text.strip().upper().rstrip("B") or "0", 1
    if number[-1:] in ("K", "M", "G"):
        number, unit = number[:-1], 1024 ** (" KMG".index(number[-1]))
    try:
        value = int(float(number) * unit)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 500M, 2G, 1048576)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a size must be positive")
    return value


def _validate(args: argparse.Namespace) -> int:
    from .dicomjson import encode
    from .validate import validate

    report = validate(args.site, decode_frames=not args.no_decode, keep=not args.no_keep,
                      source=args.source or (), endpoint_url=args.endpoint_url)
    if args.report:
        Path(args.report).write_bytes(encode(report.to_json()))
    for finding in report.findings:
        print(f"{finding.severity}: {finding.key}: {finding.message}", file=sys.stderr)
    checked = ", ".join(f"{n} {what}" for what, n in sorted(report.checked.items()))
    verdict = "conforms" if report.ok else f"does NOT conform ({len(report.findings)} findings)"
    print(f"{report.site} {verdict}; checked {checked}", file=sys.stderr)
    return EXIT_OK if report.ok else EXIT_FINDINGS


def _publish(args: argparse.Namespace) -> int:
    from .publish import publish
    from .s3store import S3Store
    from .store import LocalStore, open_store

    dest = open_store(args.dest, endpoint_url=args.endpoint_url)
    if not isinstance(dest, S3Store):
        raise SystemExit(f"static-dicomweb publish: error: {args.dest} is not an s3:// URL")
    site = LocalStore(args.site)
    if not site.exists():
        raise FileNotFoundError(f"{args.site}: no such site folder")
    result = publish(site, dest, delete=args.delete, workers=args.workers)
    print(f"published {site.url} to {dest.url}: {len(result.uploaded)} objects uploaded "
          f"({result.bytes_uploaded / 1e6:.1f} MB), {result.skipped} already there"
          + (f", {len(result.deleted)} deleted" if args.delete else ""), file=sys.stderr)
    return EXIT_OK


def _edge_function(args: argparse.Namespace) -> int:
    from .routing import edge_function

    sys.stdout.write(edge_function(args.site_prefix))
    return EXIT_OK


def _nginx_config(args: argparse.Namespace) -> int:
    from .nginx import NginxOptions, config, write

    options = NginxOptions(site=args.site, listen=args.listen, upstream=args.upstream, user=args.user,
                           workers=args.worker_processes, njs_module=args.njs_module,
                           buffer_stow=args.buffer_stow, stdio_logs=args.stdio_logs)
    if args.out is None:
        sys.stdout.write(config(options))
        return EXIT_OK
    conf = write(options, args.out)
    print(f"wrote {conf} and its njs modules; run: nginx -p {conf.parent} -c {conf}", file=sys.stderr)
    return EXIT_OK


def _sample(args: argparse.Namespace) -> int:
    from static_dicomweb_sample import SampleSpec, generate_sample

    try:
        spec = SampleSpec(patients=args.patients, slices=args.slices, rows=args.rows,
                          columns=args.rows, seed=args.seed)
    except ValueError as exc:
        print(f"static-dicomweb sample: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    files = generate_sample(Path(args.out), spec)
    print(f"wrote {len(files)} synthetic CT files under {args.out}", file=sys.stderr)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to render ``--help`` in the docs)."""
    parser = argparse.ArgumentParser(
        prog="static-dicomweb",
        description="Turn DICOM Part 10 files into a static DICOMweb site (a folder or S3) "
                    "that OHIF, 3D Slicer, dicomweb-client and MONAI Label read with plain GETs.",
        epilog="Exit codes: 0 ok; 1 inputs rejected or site not conforming; 2 usage; 3 failure.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar, errors only")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    conv = verbs.add_parser("convert", help="convert Part 10 files into a site",
                            description="Convert Part 10 files and folders into a static DICOMweb "
                                        "site. Rerunning is idempotent; new series are added.")
    conv.add_argument("inputs", nargs="+", metavar="INPUT", help="Part 10 files or folders")
    conv.add_argument("--out", required=True, metavar="DEST", help="site folder (or s3://bucket/prefix)")
    conv.add_argument("--workers", type=int, default=1, metavar="N", help="parallel processes (default 1)")
    conv.add_argument("--profile", default="default", choices=["default", "viewer", "full"],
                      help="which objects to write (docs/site-layout.md; default: default)")
    _add_endpoint_url(conv)
    conv.set_defaults(run=_convert)

    srv = verbs.add_parser("serve", help="serve a site (folder or S3) over HTTP exactly as S3 would",
                           description="Serve a site folder or s3://bucket/prefix over HTTP: stored "
                                       "bytes and headers, CORS for browser viewers, the QIDO "
                                       "routing of the edge function, STOW-RS with a token.")
    srv.add_argument("dest", metavar="DEST", help="site folder or s3://bucket/prefix")
    _add_endpoint_url(srv)
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    srv.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks one)")
    srv.add_argument("--stow-token", default=None, metavar="TOKEN",
                     help="accept STOW-RS (POST studies) from clients presenting TOKEN as a Bearer "
                          "token or HTTP Basic password (or set STATIC_DICOMWEB_STOW_TOKEN); "
                          "without it the site takes no writes")
    srv.add_argument("--max-body", type=_size, default=2 * 1024**3, metavar="SIZE",
                     help="largest STOW-RS body taken (e.g. 500M, 4G; default 2G); 413 beyond. "
                          "Bodies are spooled to $TMPDIR")
    srv.add_argument("--viewer", action="store_true",
                     help="also serve OHIF (make ohif-setup) at /viewer/, configured for this site")
    srv.set_defaults(run=_serve)

    val = verbs.add_parser("validate", help="check a site against the DICOMweb standard",
                           description="Check every object of a site (folder, s3://bucket/prefix "
                                       "or http(s) URL); exit 0 only when it conforms.")
    val.add_argument("site", metavar="URL_OR_DEST",
                     help="site folder, s3://bucket/prefix or DICOMweb base URL")
    _add_endpoint_url(val)
    val.add_argument("--report", metavar="FILE", help="also write the JSON report here")
    val.add_argument("--no-decode", action="store_true", help="do not decode frames (faster)")
    val.add_argument("--source", nargs="+", metavar="P10", default=None,
                     help="the converted files or folders: compare every frame's pixels with them")
    val.add_argument("--no-keep", action="store_true",
                     help="do not store the report in the site (_site/validation-report.json)")
    val.set_defaults(run=_validate)

    pub = verbs.add_parser("publish", help="put a site folder on S3 with every object's headers",
                           description="Upload a site folder to s3://bucket/prefix: each object "
                                       "with its Content-Type, Content-Encoding and Cache-Control, "
                                       "objects before the indexes that list them, the manifest "
                                       "last; objects already there with the same SHA-256 are "
                                       "skipped, so a rerun resumes.")
    pub.add_argument("site", metavar="SITE", help="site folder")
    pub.add_argument("dest", metavar="DEST", help="s3://bucket/prefix")
    _add_endpoint_url(pub)
    pub.add_argument("--workers", type=int, default=16, metavar="N", help="parallel uploads (default 16)")
    pub.add_argument("--delete", action="store_true",
                     help="also delete objects under DEST that the folder does not hold")
    pub.set_defaults(run=_publish)

    edge = verbs.add_parser("edge-function", help="print the CloudFront Function that routes QIDO queries",
                            description="Print the CloudFront Function (cloudfront-js-2.0) that maps "
                                        "QIDO queries onto the site's precomputed answers; the same "
                                        "routing table as serve.")
    edge.add_argument("--site-prefix", default="", help="path of the site under the distribution")
    edge.set_defaults(run=_edge_function)

    ngx = verbs.add_parser("nginx-config", help="an nginx configuration serving a site folder as S3 would",
                           description="Write (--out DIR: nginx.conf and its njs module) or print an nginx "
                                       "configuration that serves a site folder as S3 + CloudFront serve "
                                       "it: the same bytes, headers, CORS and query routing as serve; "
                                       "STOW-RS forwarded to serve --stow-token. Run it with "
                                       "nginx -p DIR -c DIR/nginx.conf (docs/nginx.md).")
    ngx.add_argument("site", metavar="SITE", help="site folder")
    ngx.add_argument("--listen", required=True, metavar="HOST:PORT", help="address to listen on")
    ngx.add_argument("--upstream", default=None, metavar="URL",
                     help="http://HOST:PORT of serve --stow-token, for STOW-RS (default: no writes)")
    ngx.add_argument("--out", default=None, metavar="DIR",
                     help="write DIR/nginx.conf and DIR/static-dicomweb.js (default: print the "
                          "configuration, which imports static-dicomweb.js from its own folder)")
    ngx.add_argument("--user", default=None, help="user of the worker processes when nginx starts as root")
    ngx.add_argument("--worker-processes", default="auto", metavar="N",
                     help="nginx worker processes (default auto: one per core)")
    ngx.add_argument("--njs-module", default=None, metavar="PATH",
                     help="njs module to load (default: Debian's libnginx-mod-http-js)")
    ngx.add_argument("--stdio-logs", action="store_true",
                     help="error log on standard error, access log on standard output (a container's "
                          "logs); default: error.log and access.log in nginx's prefix")
    ngx.add_argument("--buffer-stow", action="store_true",
                     help="take each STOW-RS body whole before handing it on with its length (for an "
                          "upstream that reads no chunked bodies); default: pass it on as it arrives")
    ngx.set_defaults(run=_nginx_config)

    smp = verbs.add_parser("sample", help="write a synthetic CT data set (with a spine)",
                           description="Write a deterministic synthetic CT data set: several "
                                       "patients, studies and series, several transfer syntaxes, "
                                       "a multi-frame instance.")
    smp.add_argument("out", metavar="OUT", help="folder to write into")
    smp.add_argument("--patients", type=int, default=2, help="patients (default 2)")
    smp.add_argument("--slices", type=int, default=24, help="slices per volume (default 24)")
    smp.add_argument("--rows", type=int, default=128, help="rows and columns (default 128)")
    smp.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    smp.set_defaults(run=_sample)
    return parser


def _add_endpoint_url(verb: argparse.ArgumentParser) -> None:
    """``--endpoint-url``, the same for every verb that reaches S3."""
    verb.add_argument("--endpoint-url", default=None, help="S3 endpoint (else AWS_ENDPOINT_URL)")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=logging.ERROR if args.quiet else level,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.verbose < 2:  # the codec plugins log every tile at INFO
        logging.getLogger("openjpeg").setLevel(logging.WARNING)
    if not args.quiet:  # progress lines where no bar is shown (standard error not a terminal)
        logging.getLogger("static_dicomweb.progress").setLevel(logging.INFO)
    if getattr(args, "workers", 1) < 1:
        parser.error("--workers must be at least 1")
    try:
        return int(args.run(args))
    except (StaticDicomwebError, OSError) as exc:
        print(f"static-dicomweb: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:
        if type(exc).__module__.startswith(("botocore", "boto3", "s3transfer")):  # S3 said no
            print(f"static-dicomweb: error: S3: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        raise
