"""Conversion as users run it: the whole ``static-dicomweb convert`` process against the floor.

Each conversion is the console script in a child process, imports
included, into a fresh output folder; the floor is ``bench_convert.py``'s:
``cp -r`` of the same input to three destinations, one after the other.
Rounds interleave the floor and every conversion of every input, so each
sees the same state of the disk; the best of each over the rounds is
reported, with its ratio to the floor, instances per second and the CPU
seconds (user + system) of the child and its own children (the worker
processes), from ``getrusage(RUSAGE_CHILDREN)`` before and after.

Two inputs, one row each per worker count: 1,000 slices with NLST-like
headers (``realistic.py``: 5 series × 200 slices of 512×512) and
``bench_convert.py``'s one series of the sample generator.  Also the best
of ten ``static-dicomweb --version`` and ``--help``.  At the end every
kept site is checked with ``static-dicomweb validate``.  With ``--baseline
REV`` every round also converts with that commit's library (``git archive
REV include``, first on ``PYTHONPATH``), so before and after are timed
interleaved, against the same floor.  Run: ``make bench-cli`` (or
``.venv/bin/python bench/bench_cli.py --runs 5 --baseline 5623252``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from bench_convert import copy_floor, remove_copies, sample_input
from realistic import write_realistic
from same_site import library_of

#: The label of this tree's library in the table (a baseline is labelled with its revision).
THIS = "this tree"
#: A conversion: input, workers, library.
Site = tuple[str, int, str]


@dataclass
class Child:
    """One timed run of child processes: wall seconds and their CPU seconds."""

    seconds: float
    user: float
    system: float

    @property
    def cpu(self) -> float:
        """User + system seconds."""
        return self.user + self.system


@dataclass
class Row:
    """Every round of one thing timed on one input."""

    runs: list[Child] = field(default_factory=list)

    def best(self) -> Child:
        """The round with the least wall time."""
        return min(self.runs, key=lambda c: c.seconds)


def run_checked(command: list[str], env: dict[str, str] | None = None) -> None:
    """Run ``command``, output discarded; exit naming it, with its standard error, unless it exits 0."""
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False,
                          env=env)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} exited {done.returncode}:\n"
                 f"{done.stderr.decode(errors='replace')[-3000:]}")


def timed_children(action: Callable[[], object]) -> Child:
    """Time ``action``, which runs child processes, and the CPU seconds of those children."""
    os.sync()  # start with no dirty pages from the last run
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    action()
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Child(seconds, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime)


def cli_command() -> list[str]:
    """The console script next to this Python (what ``pip install`` puts on the PATH)."""
    script = Path(sys.executable).parent / "static-dicomweb"
    return [str(script)] if script.exists() else [sys.executable, "-m", "static_dicomweb"]


def realistic_input(work: Path, series: int, slices: int, size: int) -> Path:
    """``realistic.py``'s series under ``work``, written once (a stamp beside says it is whole)."""
    source = work / f"realistic-{series}x{slices}x{size}"
    stamp = work / f"{source.name}.complete"
    if not stamp.exists():
        shutil.rmtree(source, ignore_errors=True)
        started = time.perf_counter()
        write_realistic(source, series, slices, size)
        stamp.write_text("")
        print(f"wrote {source} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return source


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "include"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+uncommitted include/" if dirty else "")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="rounds; the best of each is kept")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--series", type=int, default=5, help="realistic input: series")
    parser.add_argument("--slices", type=int, default=200, help="slices per series (both inputs)")
    parser.add_argument("--size", type=int, default=512, help="rows and columns (both inputs)")
    parser.add_argument("--inputs", nargs="+", choices=("realistic", "sample"),
                        default=["realistic", "sample"])
    parser.add_argument("--startup-runs", type=int, default=10,
                        help="best of this many --version and --help (0: skip)")
    parser.add_argument("--work", type=Path, default=Path(".bench"))
    parser.add_argument("--no-validate", action="store_true", help="skip validating the sites")
    parser.add_argument("--keep", action="store_true", help="keep the sites (under WORK/cli-*)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--baseline", metavar="REV", default=None,
                        help="also convert with this commit's library (git archive), in every round")
    return parser


def inputs(args: argparse.Namespace) -> dict[str, Path]:
    """The input folders named by ``--inputs``, written under ``--work`` where they are not yet."""
    sources: dict[str, Path] = {}
    if "realistic" in args.inputs:
        sources["realistic"] = realistic_input(args.work, args.series, args.slices, args.size)
    if "sample" in args.inputs:
        sources["sample"] = sample_input(args.work, args.slices, args.size)
    return sources


def libraries(work: Path, baseline: str | None) -> dict[str, dict[str, str] | None]:
    """The libraries to convert with, by label: this tree's, and ``baseline``'s as a child's environment."""
    codes: dict[str, dict[str, str] | None] = {THIS: None}
    if baseline:
        path = f"{library_of(baseline, work)}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
        codes[baseline] = dict(os.environ, PYTHONPATH=path)
    return codes


def convert_rounds(cli: list[str], sources: dict[str, Path], workers: list[int],
                   sites: dict[Site, Path], work: Path, runs: int,
                   codes: dict[str, dict[str, str] | None]) -> tuple[dict[str, Row], dict[Site, Row]]:
    """Time the floor and every conversion, interleaved, ``runs`` times; the floors and the conversions."""
    copies = [work / f"cli-cp{i}" for i in range(3)]
    floors = {name: Row() for name in sources}
    converts = {key: Row() for key in sites}
    for _ in range(runs):
        for name, source in sources.items():
            remove_copies(copies)
            floors[name].runs.append(timed_children(partial(copy_floor, source, copies)))
            for w in workers:
                for code, env in codes.items():
                    site = sites[name, w, code]
                    shutil.rmtree(site, ignore_errors=True)
                    command = [*cli, "convert", str(source), "--out", str(site), "--workers", str(w)]
                    converts[name, w, code].runs.append(timed_children(partial(run_checked, command,
                                                                               env)))
    remove_copies(copies)
    return floors, converts


def startup_rounds(cli: list[str], runs: int) -> dict[str, Row]:
    """Time ``--version`` and ``--help``, alternating, ``runs`` times (none when 0)."""
    startup = {flag: Row() for flag in ("--version", "--help")} if runs else {}
    for _ in range(runs):
        for flag, row in startup.items():
            row.runs.append(timed_children(partial(run_checked, [*cli, flag])))
    return startup


def conversion_table(files: dict[str, list[Path]], floors: dict[str, Row],
                     converts: dict[Site, Row], workers: list[int], codes: list[str]) -> dict[str, Any]:
    """Print the table's rows, one per input and worker count; their figures by input."""
    entries: dict[str, Any] = {}
    for name, paths in files.items():
        count = len(paths)
        size = sum(f.stat().st_size for f in paths)
        floor = floors[name].best()
        entry: dict[str, Any] = {
            "instances": count, "input_bytes": size, "floor_cp3_s": round(floor.seconds, 4),
            "floor_cpu_s": round(floor.cpu, 3),
            "floor_rounds_s": [round(c.seconds, 4) for c in floors[name].runs], "convert": {}}
        for w, code in ((w, code) for w in workers for code in codes):
            row = converts[name, w, code]
            best = row.best()
            per_round = [c.seconds / f.seconds for c, f in zip(row.runs, floors[name].runs, strict=True)]
            entry["convert"][str(w) if code == THIS else f"{code}:{w}"] = {
                "seconds": round(best.seconds, 4), "ratio": round(best.seconds / floor.seconds, 2),
                "instances_per_s": round(count / best.seconds, 1),
                "cpu_user_s": round(best.user, 3), "cpu_sys_s": round(best.system, 3),
                "rounds_s": [round(c.seconds, 4) for c in row.runs],
                "round_ratios": [round(r, 2) for r in per_round]}
            print(f"| {name} ({size / 1e6:.0f} MB) | {count} | {floor.seconds:.3f} s | {code} | {w} "
                  f"| {best.seconds:.3f} s | **{best.seconds / floor.seconds:.2f}×** "
                  f"| {count / best.seconds:.0f} | {best.user:.2f} + {best.system:.2f} s "
                  f"| {min(per_round):.2f}–{max(per_round):.2f}× |")
        entries[name] = entry
    return entries


def startup_lines(startup: dict[str, Row]) -> dict[str, Any]:
    """Print the best ``--version`` and ``--help``; their figures by flag."""
    entries: dict[str, Any] = {}
    for flag, row in startup.items():
        best = row.best()
        entries[flag] = {"seconds": round(best.seconds, 4), "cpu_s": round(best.cpu, 3),
                         "rounds_s": [round(c.seconds, 4) for c in row.runs]}
        print(f"static-dicomweb {flag}: {best.seconds:.3f} s (best of {len(row.runs)}; "
              f"CPU {best.cpu:.3f} s)")
    return entries


def validate(cli: list[str], sites: dict[Site, Path]) -> dict[str, int]:
    """``static-dicomweb validate`` every site, printing its last line; the exit statuses."""
    validated = {}
    for (name, w, code), site in sites.items():
        done = subprocess.run([*cli, "validate", str(site)], capture_output=True, text=True, check=False)
        validated[f"{name}-w{w}" + ("" if code == THIS else f"-{code}")] = done.returncode
        last = ((done.stdout + done.stderr).strip().splitlines() or [""])[-1]
        print(f"validate {site}: exit {done.returncode} {last}")
    return validated


def main() -> int:
    args = _parser().parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    sources = inputs(args)
    files = {name: sorted(src.rglob("*.dcm")) for name, src in sources.items()}
    for name in sources:  # warm the page cache for every side alike
        for f in files[name]:
            f.read_bytes()

    cli = cli_command()
    codes = libraries(args.work, args.baseline)
    sites = {(name, w, code): args.work / f"cli-site-{name}-w{w}{'' if code == THIS else '-' + code}"
             for name in sources for w in args.workers for code in codes}
    load_start, started_at = _load(), datetime.datetime.now(datetime.UTC)
    floors, converts = convert_rounds(cli, sources, args.workers, sites, args.work, args.runs, codes)
    startup = startup_rounds(cli, args.startup_runs)
    load_end = _load()

    results: dict[str, Any] = {
        "date": started_at.isoformat(timespec="seconds"), "commit": _commit(), "runs": args.runs,
        "loadavg_start": load_start, "loadavg_end": load_end, "cpus": os.cpu_count(),
        "command": " ".join(sys.argv), "inputs": {}, "startup": {}}
    print(f"{started_at:%Y-%m-%d %H:%M} UTC, commit {results['commit']}, best of {args.runs} rounds; "
          f"load average {load_start} at the start, {load_end} at the end")
    print()
    print("| input | instances | floor `cp -r` ×3 | code | workers | convert (whole CLI) | ratio "
          "| instances/s | CPU user + sys | rounds' ratios |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    results["inputs"] = conversion_table(files, floors, converts, args.workers, list(codes))
    print()
    results["startup"] = startup_lines(startup)

    failed = False
    if not args.no_validate:
        results["validate_exit"] = validate(cli, sites)
        failed = any(code != 0 for code in results["validate_exit"].values())
    if not args.keep:
        for site in sites.values():
            shutil.rmtree(site, ignore_errors=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
