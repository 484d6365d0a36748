"""Requests per second and latency of ``static-dicomweb serve`` on one machine.

Starts ``serve`` as its own process on a converted site (a synthetic CT series
of 512 x 512 slices unless ``--site`` names one), then for each object
(series metadata, one frame) and each concurrency ``c`` runs ``c`` client
processes, each sending GETs on one keep-alive connection for ``--seconds``,
and reports requests/s, p50 and p99 latency.  Clients and server share the
machine's cores: the figures compare servers run the same way, they are not
what a server alone would do.

``--baseline DIR`` also measures the ``serve`` of another checkout (its
``include/`` folder on ``PYTHONPATH``) on the same input, converted by that
checkout (site layouts differ between versions), alternating the two servers
per measurement so that a change in the machine's load hits both.

    .venv/bin/python bench/bench_serve.py --seconds 5 --repeat 3 --baseline /tmp/old-checkout
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent.parent


def start_server(site: Path, include: Path | None) -> tuple[subprocess.Popen[bytes], str]:
    """``serve SITE --port 0`` in a new process; its base URL from the line it prints."""
    env = dict(os.environ)
    if include is not None:
        env["PYTHONPATH"] = str(include)
    proc = subprocess.Popen([sys.executable, "-m", "static_dicomweb", "-q", "serve", str(site),
                             "--port", "0"], env=env, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    match = re.search(r"(http://[0-9.]+:\d+)", line)
    if not match:
        proc.kill()
        raise SystemExit(f"serve did not start: {line!r}")
    return proc, match.group(1)


def get_json(url: str) -> object:
    import requests

    response = requests.get(url, timeout=30)
    response.raise_for_status()
    return response.json()


def pick_paths(url: str) -> dict[str, str]:
    """A series' metadata and the first frame of one of its instances (largest series)."""
    rows = get_json(f"{url}/series")
    assert isinstance(rows, list)
    row = max(rows, key=lambda r: r.get("00201209", {}).get("Value", [0])[0])
    study, series = row["0020000D"]["Value"][0], row["0020000E"]["Value"][0]
    instances = get_json(f"{url}/studies/{study}/series/{series}/instances")
    assert isinstance(instances, list)
    sop = instances[0]["00080018"]["Value"][0]
    base = f"/studies/{study}/series/{series}"
    return {"series metadata": f"{base}/metadata", "frame": f"{base}/instances/{sop}/frames/1"}


def _read_response(sock: socket.socket, buf: bytearray, body: bytearray) -> int:
    """Read one response with a Content-Length from ``sock``; returns its status.

    ``buf`` holds bytes read past the previous response; the body is read into
    ``body`` (grown as needed) without copying it again, so that the clients
    take as little of the machine's CPU as they can.
    """
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buf += chunk
    end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:end]).decode("latin-1")
    status = int(head.split(" ", 2)[1])
    match = re.search(r"(?im)^content-length:\s*(\d+)", head)
    length = int(match.group(1)) if match else 0
    del buf[:end]
    got = min(length, len(buf))
    del buf[:got]  # (the bytes themselves are not needed)
    if len(body) < length:
        body.extend(bytes(length - len(body)))
    view = memoryview(body)
    while got < length:
        count = sock.recv_into(view[got:length])
        if not count:
            raise ConnectionError("server closed the connection mid-body")
        got += count
    return status


def client(url: str, path: str, seconds: float, start_at: float, out: mp.Queue) -> None:  # type: ignore[type-arg]
    """One keep-alive connection sending GETs until the time is up; puts its latencies."""
    split = urlsplit(url)
    request = (f"GET {path} HTTP/1.1\r\nHost: {split.netloc}\r\nAccept-Encoding: gzip\r\n\r\n").encode()
    sock = socket.create_connection((split.hostname, split.port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf, body = bytearray(), bytearray()
    latencies: list[float] = []
    errors = 0
    while time.time() < start_at:
        time.sleep(0.001)
    stop = time.perf_counter() + seconds
    while (now := time.perf_counter()) < stop:
        sock.sendall(request)
        if _read_response(sock, buf, body) != 200:
            errors += 1
        latencies.append(time.perf_counter() - now)
    sock.close()
    out.put((latencies, errors))


def measure(url: str, path: str, concurrency: int, seconds: float) -> dict[str, float]:
    """Requests/s and latency percentiles of ``concurrency`` clients for ``seconds``."""
    ctx = mp.get_context("fork")
    queue: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    start_at = time.time() + 0.5
    procs = [ctx.Process(target=client, args=(url, path, seconds, start_at, queue))
             for _ in range(concurrency)]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=seconds + 60) for _ in procs]
    for proc in procs:
        proc.join()
    latencies = sorted(x for lat, _ in results for x in lat)
    errors = sum(e for _, e in results)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return {"requests": len(latencies), "errors": errors, "rps": len(latencies) / seconds,
            "p50_ms": statistics.median(latencies) * 1000, "p99_ms": p99 * 1000}


def make_site(folder: Path, include: Path | None, name: str) -> Path:
    """The synthetic CT sample (512 x 512) converted into a site folder by a checkout's code."""
    env = dict(os.environ)
    if include is not None:
        env["PYTHONPATH"] = str(include)
    if not (folder / "in").exists():
        subprocess.run([sys.executable, "-m", "static_dicomweb", "-q", "sample", str(folder / "in"),
                        "--patients", "1", "--slices", "20", "--rows", "512"], check=True, env=env)
    subprocess.run([sys.executable, "-m", "static_dicomweb", "-q", "convert", str(folder / "in"),
                    "--out", str(folder / name)], check=True, env=env)
    return folder / name


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", type=Path, help="a converted site folder (default: a new sample)")
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement (default 5)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--baseline", type=Path, help="another checkout whose serve to measure too")
    parser.add_argument("--repeat", type=int, default=1,
                        help="measure every cell this many times, alternating the servers' order; "
                             "the table shows the median of each cell (default 1)")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    return parser


Running = dict[str, tuple[subprocess.Popen[bytes], str]]


def start_servers(args: argparse.Namespace, tmp: Path, running: Running) -> None:
    """Start this checkout's serve (and the baseline's, first) into ``running``, by name."""
    servers: dict[str, Path | None] = {"this checkout": None}
    if args.baseline:
        servers = {f"baseline {args.baseline}": args.baseline / "include", **servers}
    for number, (name, include) in enumerate(servers.items()):
        site = args.site or make_site(tmp, include, f"site{number}")
        running[name] = start_server(site, include)


def measure_all(running: Running, paths: dict[str, str], concurrency: list[int], seconds: float,
                repeat: int) -> list[dict[str, Any]]:
    """Every object at every concurrency on every server, ``repeat`` times, alternating the servers' order."""
    figures: list[dict[str, Any]] = []
    for number in range(repeat):
        order = list(running.items())
        for what, path in paths.items():
            for conc in concurrency:
                for name, (_, url) in order if number % 2 == 0 else order[::-1]:
                    row = measure(url, path, conc, seconds)
                    figures.append({"server": name, "object": what, "c": conc, "repeat": number, **row})
                    print(f"  run {number + 1}: {name} {what} c={conc}: {row['rps']:.0f} req/s, "
                          f"p99 {row['p99_ms']:.2f} ms", file=sys.stderr, flush=True)
    return figures


def print_table(figures: list[dict[str, Any]], servers: list[str], paths: dict[str, str],
                concurrency: list[int], repeat: int) -> None:
    """One line per object, concurrency and server: the median of its measurements, errors summed."""
    print(f"{'server':<40} {'object':<16} {'c':>3} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'errors':>6}   (median of {repeat})")
    for what in paths:
        for conc in concurrency:
            for name in servers:
                cell = [f for f in figures if (f["server"], f["object"], f["c"]) == (name, what, conc)]
                med = {k: statistics.median(float(f[k]) for f in cell)
                       for k in ("rps", "p50_ms", "p99_ms")}
                errors = sum(float(f["errors"]) for f in cell)
                print(f"{name:<40} {what:<16} {conc:>3} {med['rps']:>8.0f} {med['p50_ms']:>8.2f} "
                      f"{med['p99_ms']:>8.2f} {errors:>6.0f}", flush=True)


def main() -> None:
    args = _parser().parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        running: Running = {}
        try:
            start_servers(args, Path(tmp), running)
            paths = pick_paths(next(iter(running.values()))[1])
            figures = measure_all(running, paths, args.concurrency, args.seconds, args.repeat)
            print_table(figures, list(running), paths, args.concurrency, args.repeat)
            if args.json:
                args.json.write_text(json.dumps(figures, indent=1))
        finally:
            for proc, _ in running.values():
                proc.terminate()
                proc.wait(timeout=30)


if __name__ == "__main__":
    main()
