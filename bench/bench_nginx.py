"""``serve`` against nginx (``nginx-config``) on the same site: requests per second, c=1 and c=8.

Converts a synthetic CT series (``--slices`` slices of 512 x 512, one
patient) into a site unless ``--site`` names one, starts ``serve`` and
nginx on it, and for series metadata and one native frame measures each
server at 1 and 8 keep-alive connections for ``--seconds`` with wrk
(Debian's ``wrk``; ``scripts/nginx.sh --wrk`` installs it), or, without wrk,
with Python client processes that keep one connection each.  nginx runs
twice: as configured (njs derives every object's headers from its first
bytes) and with the njs header filter taken out (what static serving costs
without it; the headers are then wrong, so this is a bound, not an
option).  Clients and servers share the machine's cores: the figures
compare servers run the same way, in the same run.  With ``--rounds N`` every
figure is measured N times, the servers taking turns within each round (so a
change in the machine's load hits all of them), and the best is reported
with the range.

    .venv/bin/python bench/bench_nginx.py --seconds 5 --rounds 3 --json .bench/nginx.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing as mp
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE / "include"))

from static_dicomweb.convert import convert  # noqa: E402
from static_dicomweb.nginx import NginxOptions, write  # noqa: E402
from static_dicomweb.store import LocalStore  # noqa: E402
from static_dicomweb_sample import SampleSpec, generate_sample  # noqa: E402


def make_site(folder: Path, slices: int) -> Path:
    generate_sample(folder / "input", SampleSpec(patients=1, slices=slices, rows=512, columns=512,
                                                 multiframe=False, localizer=False))
    site = folder / "site"
    result = convert([folder / "input"], LocalStore(site))
    assert result.ok, result.rejected
    return site


def pick_paths(site: Path) -> dict[str, str]:
    """The largest series' metadata and the first frame of its first instance."""
    store = LocalStore(site)
    rows = json.loads(gzip.decompress(store.get("series")))
    row = max(rows, key=lambda r: r["00201209"]["Value"][0])
    study, series = row["0020000D"]["Value"][0], row["0020000E"]["Value"][0]
    instance = store.children(f"studies/{study}/series/{series}/instances/")[0]
    return {"series metadata": f"/studies/{study}/series/{series}/metadata",
            "one frame": f"/studies/{study}/series/{series}/instances/{instance}/frames/1"}


def start_serve(site: Path) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen([sys.executable, "-m", "static_dicomweb", "-q", "serve", str(site),
                             "--port", "0"], stderr=subprocess.PIPE)
    assert proc.stderr is not None
    match = re.search(r"(http://[0-9.]+:\d+)", proc.stderr.readline().decode())
    if match is None:
        proc.kill()
        raise SystemExit("serve did not start")
    return proc, match.group(1)


def start_nginx(site: Path, prefix: Path, njs_headers: bool) -> tuple[subprocess.Popen[bytes], str]:
    """nginx on a socket bound here to port 0 and inherited (the ``NGINX`` variable)."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
    port = listener.getsockname()[1]
    conf = write(NginxOptions(site=str(site), listen=f"127.0.0.1:{port}",
                              user="root" if os.geteuid() == 0 else None), prefix)
    if not njs_headers:
        conf.write_text(conf.read_text().replace("js_header_filter sdw.headers;", ""))
    fd = listener.fileno()
    proc = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(prefix), "-c", str(conf)],
                            pass_fds=(fd,), env={**os.environ, "NGINX": f"{fd};"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    listener.close()
    return proc, f"http://127.0.0.1:{port}"


def wrk(url: str, connections: int, seconds: float) -> float:
    threads = max(1, min(connections, 2))
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{round(seconds)}s", url],
                         capture_output=True, text=True, check=True).stdout
    match = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    assert match, out
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    assert errors is None, out
    return float(match.group(1))


def _client(url: str, seconds: float, out: mp.Queue) -> None:  # type: ignore[type-arg]
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port)
    done, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        conn.request("GET", parts.path)
        response = conn.getresponse()
        response.read()
        assert response.status == 200
        done += 1
    out.put(done)


def python_clients(url: str, connections: int, seconds: float) -> float:
    queue: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    procs = [mp.Process(target=_client, args=(url, seconds, queue)) for _ in range(connections)]
    for proc in procs:
        proc.start()
    total = sum(queue.get() for _ in procs)
    for proc in procs:
        proc.join()
    return total / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", type=Path, help="a converted site (default: a new synthetic series)")
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=1, help="measurements of each figure (best kept)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    measure = wrk if shutil.which("wrk") else python_clients
    with tempfile.TemporaryDirectory(prefix="bench-nginx-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        site = args.site or make_site(work, args.slices)
        paths = pick_paths(site)
        servers = {"serve": start_serve(site),
                   "nginx": start_nginx(site, work / "nginx", njs_headers=True),
                   "nginx, no njs": start_nginx(site, work / "nginx-plain", njs_headers=False)}
        rates: dict[str, dict[str, list[float]]] = {}
        try:
            for _ in range(args.rounds):
                for what, path in paths.items():
                    for connections in (1, 8):
                        for name, (_, url) in servers.items():
                            rate = measure(url + path, connections, args.seconds)
                            rates.setdefault(f"{what} c={connections}", {}).setdefault(name, []).append(rate)
                            print(f"{what:16} c={connections} {name:14} {rate:10,.0f} req/s", flush=True)
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(timeout=60)
    print(f"\nclient: {'wrk' if measure is wrk else 'Python processes, one keep-alive connection each'}; "
          f"{os.cpu_count()} cores; {args.seconds:g} s per figure; best of {args.rounds} (range)")
    print("| request | " + " | ".join(servers) + " |")
    print("|---|" + "---|" * len(servers))
    for row, figures in rates.items():
        cells = [f"{max(figures[name]):,.0f}" + (f" ({min(figures[name]):,.0f}–{max(figures[name]):,.0f})"
                                                   if args.rounds > 1 else "") for name in servers]
        print(f"| {row} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"client": measure.__name__, "seconds": args.seconds,
                                         "rounds": args.rounds, "rates": rates}, indent=1))


if __name__ == "__main__":
    main()
