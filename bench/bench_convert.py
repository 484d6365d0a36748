"""Conversion speed as a ratio to a floor measured in the same run.

The floor is ``cp -r`` of the input to three destinations, one after the
other: reading the input once and writing its bytes three times is about
what the default profile must do (frames, instance and series Part 10).
Best of three for each.  Run: ``make bench`` (or
``.venv/bin/python bench/bench_convert.py --slices 200 --size 512``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pydicom
from pydicom.uid import ExplicitVRLittleEndian

from static_dicomweb.convert import convert
from static_dicomweb.sample import SampleSpec, generate_sample
from static_dicomweb.store import LocalStore


def best_of(runs: int, prepare, action) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(runs):
        prepare()
        os.sync()  # start each timed run with no dirty pages from the last one
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--work", type=Path, default=Path(".bench"))
    parser.add_argument("--private-bulk", action="store_true",
                        help="use the series with a 2 kB private OB per slice (one more object each)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    source = args.work / f"input-{args.slices}x{args.size}{'-private' if args.private_bulk else ''}"
    if not source.exists():
        spec = SampleSpec(patients=1, slices=args.slices, rows=args.size, columns=args.size,
                          transfer_syntaxes=(ExplicitVRLittleEndian,), multiframe=False,
                          localizer=False)
        scratch = args.work / "scratch"
        generate_sample(scratch, spec)
        # one series of ``slices`` instances: the sample's STANDARD series carries a 2 kB
        # private OB per slice (bulk data); its BONE series, like most NLST CT, does not
        wanted = "STANDARD" if args.private_bulk else "BONE"
        series = next(p.parent for p in scratch.rglob("0001.dcm")
                      if wanted in str(pydicom.dcmread(p, stop_before_pixels=True).SeriesDescription)
                      and len(list(p.parent.glob("*.dcm"))) == args.slices)
        shutil.move(str(series), str(source))
        shutil.rmtree(scratch)
    files = sorted(source.rglob("*.dcm"))
    size = sum(f.stat().st_size for f in files)
    copies = [args.work / f"cp{i}" for i in range(3)]

    def clear_copies() -> None:
        for c in copies:
            shutil.rmtree(c, ignore_errors=True)

    def copy_three() -> None:
        for c in copies:
            subprocess.run(["cp", "-r", str(source), str(c)], check=True)

    for f in files:  # warm the page cache for both sides alike
        f.read_bytes()
    floor = best_of(args.runs, clear_copies, copy_three)
    clear_copies()
    results = {"instances": len(files), "input_bytes": size, "floor_cp3_s": round(floor, 4),
               "profile": args.profile, "convert": {}}
    print(f"input: {len(files)} instances, {size / 1e6:.1f} MB; floor (cp -r x3): {floor:.3f} s")
    site = args.work / "site"
    for workers in args.workers:
        seconds = best_of(args.runs, lambda: shutil.rmtree(site, ignore_errors=True),
                          lambda w=workers: convert([source], LocalStore(site), profile=args.profile,
                                                    workers=w))
        ratio = seconds / floor
        results["convert"][str(workers)] = {"seconds": round(seconds, 4), "ratio": round(ratio, 2),
                                            "instances_per_s": round(len(files) / seconds, 1)}
        print(f"convert --workers {workers}: {seconds:.3f} s = {ratio:.2f}x floor, "
              f"{len(files) / seconds:.0f} instances/s")
    stored = sum(p.stat().st_size for p in site.rglob("*.body"))
    results["site_bytes"] = stored
    print(f"site: {stored / 1e6:.1f} MB = {stored / size:.2f}x input")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
