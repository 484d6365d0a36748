"""Index aggregation at NLST scale: 73,574 studies, 204,346 series (synthetic rows, no pixels).

Times, on a local folder store:

1. a full build: every study's ``studies/{S}/series`` index, then the root
   ``studies`` and ``series`` (and their line records) and every query
   answer under ``_q/`` from nothing;
2. an incremental run: one study changes, its index and both roots are merged.

The study indexes are handed to the aggregation's writer, as ``aggregate``
writes them: on a folder, in this process for the first writes, then in
child processes beside it (``--no-offload``: all in this process).  Reports
wall time, CPU time (this process and its writer processes) and peak
resident memory of each.  Run: ``.venv/bin/python bench/bench_aggregate.py``
(``--studies/--series`` to scale down).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from static_dicomweb import keys
from static_dicomweb.aggregate import _put_json, aggregate_roots, write_manifest
from static_dicomweb.profiles import get_profile
from static_dicomweb.qido import series_row, study_row
from static_dicomweb.store import LocalStore
from static_dicomweb.writer import LOCAL_WRITE_THREADS, Writer

TEMPLATE = {
    "00080005": {"vr": "CS", "Value": ["ISO_IR 100"]},
    "00080020": {"vr": "DA", "Value": ["20010102"]}, "00080030": {"vr": "TM", "Value": ["101500"]},
    "00080050": {"vr": "SH", "Value": ["A00000001"]}, "00080060": {"vr": "CS", "Value": ["CT"]},
    "00080090": {"vr": "PN"}, "0008103E": {"vr": "LO", "Value": ["0,OPA,GE,HSQX,STANDARD,350,2.5"]},
    "00081030": {"vr": "LO", "Value": ["NLST-LSS"]}, "00100010": {"vr": "PN", "Value": [
        {"Alphabetic": "100012"}]}, "00100020": {"vr": "LO", "Value": ["100012"]},
    "00100030": {"vr": "DA"}, "00100040": {"vr": "CS", "Value": ["M"]},
    "00200010": {"vr": "SH", "Value": ["1"]}, "00200011": {"vr": "IS", "Value": [2]},
}


def synthetic(studies: int, series: int, seed: int = 0) -> Iterator[tuple[str, list[dict]]]:  # type: ignore[type-arg]
    """(Study UID, series rows) per study, made as they are consumed: every study has one series,
    the rest are spread at random."""
    rng = random.Random(seed)
    per_study = [1] * studies
    for _ in range(series - studies):
        per_study[rng.randrange(studies)] += 1
    for s, count in enumerate(per_study):
        study_uid = f"1.3.6.1.4.1.14519.5.2.1.7009.9004.{100000000 + s}"
        rows = []
        for n in range(count):
            meta = dict(TEMPLATE)  # the template's values are shared, never changed
            meta["0020000D"] = {"vr": "UI", "Value": [study_uid]}
            meta["0020000E"] = {"vr": "UI", "Value": [f"{study_uid}.{n + 1}"]}
            meta["00200011"] = {"vr": "IS", "Value": [n + 1]}
            meta["00100020"] = {"vr": "LO", "Value": [str(100000 + s // 3)]}
            rows.append(series_row(meta, rng.choice((2, 155, 180, 220))))
        yield study_uid, rows


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_s() -> tuple[float, float]:
    """User and system CPU seconds of this process (all threads) and its ended children so far."""
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                          resource.RUSAGE_CHILDREN))
    return own.ru_utime + children.ru_utime, own.ru_stime + children.ru_stime


def _status(pid: int) -> dict[str, str]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


class ChildPeaks:
    """The peak resident memory of this process's children, read from ``/proc`` while they run.

    (``RUSAGE_CHILDREN`` would count the parent's memory: a child started by
    ``vfork`` and ``exec`` inherits the high-water mark of the memory it shared.)
    """

    def __init__(self) -> None:
        self.peaks: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        me, known, rounds = str(os.getpid()), set(), 0
        while not self._stop.wait(0.25):
            if rounds % 4 == 0:  # look for new children every second, read known ones 4 times
                known |= {int(e.name) for e in os.scandir("/proc") if e.name.isdigit()
                          and _status(int(e.name)).get("PPid") == me}
            rounds += 1
            for pid in list(known):
                status = _status(pid)
                if "VmHWM" not in status:
                    known.discard(pid)
                    continue
                self.peaks[pid] = max(self.peaks.get(pid, 0), int(status["VmHWM"].split()[0]) / 1024)

    def largest(self) -> float:
        """The largest peak of one child so far (MB)."""
        return max(self.peaks.values(), default=0.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=73_574)
    parser.add_argument("--series", type=int, default=204_346)
    parser.add_argument("--work", type=Path, default=Path(".bench/aggregate"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=LOCAL_WRITE_THREADS,
                        help=f"writer threads (default {LOCAL_WRITE_THREADS}, as aggregate uses "
                             "on a folder; S3 gets more)")
    parser.add_argument("--no-offload", action="store_true",
                        help="write in this process (default: a child process writes, beside it)")
    parser.add_argument("--keep", action="store_true", help="leave the site in --work")
    args = parser.parse_args()
    child_peaks = ChildPeaks()
    shutil.rmtree(args.work, ignore_errors=True)
    store = LocalStore(args.work)
    started = time.perf_counter()
    for _ in synthetic(args.studies, args.series):
        pass
    making = time.perf_counter() - started
    print(f"making the synthetic rows alone: {making:.1f} s (included below)")

    started = time.perf_counter()
    cpu_before = cpu_s()
    first_study: tuple[str, list[dict]] | None = None  # type: ignore[type-arg]

    in_study_indexes = 0.0
    writer = Writer(store, args.threads, offload=not args.no_offload and None)

    def study_indexes() -> Iterator[tuple[str, dict, list[dict]]]:  # type: ignore[type-arg]
        nonlocal first_study, in_study_indexes
        for study, rows in synthetic(args.studies, args.series):
            first_study = first_study or (study, rows)
            begun = time.perf_counter()
            writer.submit(_put_json, store, keys.study_series(study), rows)
            row = study_row(rows)
            in_study_indexes += time.perf_counter() - begun
            yield study, row, rows

    with writer:
        lines = aggregate_roots(store, study_indexes(), writer=writer)
    write_manifest(store, get_profile("default"), lines)
    full = time.perf_counter() - started
    full_cpu = [after - before for after, before in zip(cpu_s(), cpu_before, strict=True)]
    full_peak = peak_mb()
    sizes = {k: store.path(k).stat().st_size for k in ("studies", "series")}
    print(f"full build of {args.studies} study indexes and both roots: {full:.1f} s "
          f"({in_study_indexes:.1f} s handing study indexes to the writer); "
          f"CPU {full_cpu[0]:.1f} s user + {full_cpu[1]:.1f} s system; "
          f"peak {full_peak:.0f} MB (writer processes {child_peaks.largest():.0f} MB); "
          f"studies {sizes['studies'] / 1e6:.1f} MB gz, "
          f"series {sizes['series'] / 1e6:.1f} MB gz")

    assert first_study is not None
    study, rows = first_study
    extra = {**rows[0], "0020000E": {"vr": "UI", "Value": [f"{study}.999"]},
             "00200011": {"vr": "IS", "Value": [999]}}
    rows = [*rows, series_row(extra, 10)]
    started = time.perf_counter()
    with Writer(store, args.threads, offload=not args.no_offload and None) as writer:
        writer.submit(_put_json, store, keys.study_series(study), rows)
        lines = aggregate_roots(store, [(study, study_row(rows), rows)], writer=writer)
    write_manifest(store, get_profile("default"), lines)
    incremental = time.perf_counter() - started
    manifest = json.loads(store.get(keys.manifest().key))
    print(f"incremental (one study gains a series): {incremental:.1f} s; peak {peak_mb():.0f} MB; "
          f"manifest counts {manifest['counts']}")
    if args.json:
        args.json.write_text(json.dumps({
            "studies": args.studies, "series": args.series, "full_s": round(full, 2),
            "full_cpu_user_s": round(full_cpu[0], 2), "full_cpu_system_s": round(full_cpu[1], 2),
            "making_rows_s": round(making, 2), "study_indexes_s": round(in_study_indexes, 2),
            "incremental_s": round(incremental, 2), "threads": args.threads,
            "peak_mb": round(peak_mb()),
            "writer_processes_peak_mb": round(child_peaks.largest()), "offload": not args.no_offload,
            "root_gz_bytes": sizes}, indent=2) + "\n")
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
