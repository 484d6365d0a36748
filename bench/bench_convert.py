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
from collections.abc import Callable
from pathlib import Path

import pydicom
from pydicom.uid import ExplicitVRLittleEndian

from static_dicomweb.convert import convert
from static_dicomweb.store import LocalStore
from static_dicomweb_sample import SampleSpec, generate_sample


def timed(prepare: Callable[[], object], action: Callable[[], object]) -> float:
    prepare()
    os.sync()  # start each timed run with no dirty pages from the last one
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def sample_input(work: Path, slices: int, size: int, *, private_bulk: bool = False) -> Path:
    """The input of this benchmark: one series of the sample generator, made once under ``work``."""
    source = work / f"input-{slices}x{size}{'-private' if private_bulk else ''}"
    if not source.exists():
        spec = SampleSpec(patients=1, slices=slices, rows=size, columns=size,
                          transfer_syntaxes=(ExplicitVRLittleEndian,), multiframe=False,
                          localizer=False)
        scratch = work / "scratch"
        generate_sample(scratch, spec)
        # one series of ``slices`` instances: the sample's STANDARD series carries a 2 kB
        # private OB per slice (bulk data); its BONE series, like most NLST CT, does not
        wanted = "STANDARD" if private_bulk else "BONE"
        series = next(p.parent for p in scratch.rglob("0001.dcm")
                      if wanted in str(pydicom.dcmread(p, stop_before_pixels=True).SeriesDescription)
                      and len(list(p.parent.glob("*.dcm"))) == slices)
        shutil.move(str(series), str(source))
        shutil.rmtree(scratch)
    return source


def copy_floor(source: Path, copies: list[Path]) -> None:
    """The floor: ``cp -r`` of ``source`` to each of ``copies``, one after the other."""
    for c in copies:
        subprocess.run(["cp", "-r", str(source), str(c)], check=True)


def remove_copies(copies: list[Path]) -> None:
    """Remove what :func:`copy_floor` wrote."""
    for c in copies:
        shutil.rmtree(c, ignore_errors=True)


def _span(times: list[float]) -> str:
    return f"{min(times):.3f}-{max(times):.3f} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3, help="rounds; the best of each is kept")
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--work", type=Path, default=Path(".bench"))
    parser.add_argument("--private-bulk", action="store_true",
                        help="use the series with a 2 kB private OB per slice (one more object each)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    source = sample_input(args.work, args.slices, args.size, private_bulk=args.private_bulk)
    files = sorted(source.rglob("*.dcm"))
    size = sum(f.stat().st_size for f in files)
    copies = [args.work / f"cp{i}" for i in range(3)]

    def clear_copies() -> None:
        remove_copies(copies)

    def copy_three() -> None:
        copy_floor(source, copies)

    naive_out = args.work / "naive"

    def naive_loop() -> None:
        """A naive pydicom loop, for reference: read each file, write its pixels and Part 10."""
        naive_out.mkdir()
        for f in files:
            ds = pydicom.dcmread(f)
            (naive_out / f"{ds.SOPInstanceUID}.raw").write_bytes(ds.PixelData)
            ds.save_as(naive_out / f"{ds.SOPInstanceUID}.dcm")

    for f in files:  # warm the page cache for both sides alike
        f.read_bytes()
    site = args.work / "site"
    # rounds interleave the floor and every convert, so each sees the same state of the disk;
    # the best of each over the rounds is reported
    floors: list[float] = []
    naives: list[float] = []
    converts: dict[int, list[float]] = {w: [] for w in args.workers}
    for _ in range(args.runs):
        floors.append(timed(clear_copies, copy_three))
        naives.append(timed(lambda: shutil.rmtree(naive_out, ignore_errors=True), naive_loop))
        for workers in args.workers:
            converts[workers].append(timed(
                lambda: shutil.rmtree(site, ignore_errors=True),
                lambda w=workers: convert([source], LocalStore(site), profile=args.profile, workers=w)))
    clear_copies()
    shutil.rmtree(naive_out, ignore_errors=True)
    floor, naive = min(floors), min(naives)
    results = {"instances": len(files), "input_bytes": size, "floor_cp3_s": round(floor, 4),
               "naive_pydicom_s": round(naive, 4), "naive_ratio": round(naive / floor, 2),
               "profile": args.profile, "runs": args.runs, "convert": {},
               "rounds": {"floor_cp3_s": [round(t, 4) for t in floors],
                          "naive_pydicom_s": [round(t, 4) for t in naives]}}
    print(f"input: {len(files)} instances, {size / 1e6:.1f} MB; floor (cp -r x3): {floor:.3f} s "
          f"(rounds {_span(floors)})")
    print(f"naive pydicom loop (pixels + Part 10 only): {naive:.3f} s = {naive / floor:.2f}x floor")
    for workers in args.workers:
        seconds = min(converts[workers])
        ratio = seconds / floor
        # each round's convert over the same round's floor: how far the best-of ratio can be trusted
        per_round = [c / f for c, f in zip(converts[workers], floors, strict=True)]
        results["convert"][str(workers)] = {"seconds": round(seconds, 4), "ratio": round(ratio, 2),
                                            "instances_per_s": round(len(files) / seconds, 1),
                                            "round_ratios": [round(r, 2) for r in per_round]}
        results["rounds"][f"convert_{workers}_s"] = [round(t, 4) for t in converts[workers]]
        print(f"convert --workers {workers}: {seconds:.3f} s = {ratio:.2f}x floor, "
              f"{len(files) / seconds:.0f} instances/s (rounds {_span(converts[workers])}; "
              f"per-round ratio {min(per_round):.2f}-{max(per_round):.2f}x)")
    stored = sum(p.stat().st_size for p in site.rglob("*.body"))
    results["site_bytes"] = stored
    print(f"site: {stored / 1e6:.1f} MB = {stored / size:.2f}x input")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
