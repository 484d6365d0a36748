"""Where the time of ``static-dicomweb convert`` goes: cProfile, and py-spy where installed.

Profiles one conversion of ``bench_cli.py``'s realistic input (made if
missing) into a fresh folder, the whole CLI process from its first import:

- cProfile, in a fresh interpreter, timed by the main thread's CPU time
  (``time.thread_time``: the other load of a shared machine, waits for a
  core or the disk, is left out); the main thread only: the writer
  thread that stores each instance's objects is not in it.  Prints the
  top functions by cumulative and by own time, and the phases below.
- py-spy (``pip install py-spy``; not a requirement of the project), in a
  child process, every thread, waiting included (``--idle``): the phases
  as shares of the main thread's samples, and what the other threads do.

Phases, from each function's place in the stack: imports (any
``_find_and_load``), reading (``read_instance``: parse, hash, pixel
checks), DICOM JSON (``InstanceWriter.metadata`` and
``encode_attributes``: pydicom's element values, ``dataset_to_json``,
encoding), writing (the rest of ``_write_objects`` and the identity record:
the store's creates, writes and renames), aggregation (``aggregate``) and
the rest.  Run::

    .venv/bin/python bench/profile_convert.py --workers 1 --top 15
"""

from __future__ import annotations

import argparse
import io
import os
import pstats
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from bench_cli import cli_command, realistic_input

#: (phase, a function name or file:function that puts a frame in it); the first match inward wins.
PHASES = (("imports", "_find_and_load"), ("aggregation", "aggregate (static_dicomweb/aggregate.py"),
          ("DICOM JSON", "InstanceWriter.metadata"), ("DICOM JSON", "encode_attributes"),
          ("reading", "read_instance"), ("writing", "InstanceWriter.write"))


def _phase(frames: list[str]) -> str:
    if any("_find_and_load" in frame for frame in frames):  # an import inside a phase: an import
        return "imports"
    for frame in reversed(frames):  # innermost first
        for phase, marker in PHASES[1:]:
            if marker in frame:
                return phase
    if any("(static_dicomweb/store.py" in frame for frame in frames):  # a writer thread's put
        return "writing"
    if any("(concurrent/futures/thread.py" in f or "SimpleQueue.get" in f for f in frames[-2:]):
        return "idle"
    return "other"


def py_spy_phases(raw: Path) -> tuple[dict[str, Counter[str]], float]:
    """Samples per thread and phase from py-spy's raw output (``--threads --subprocesses``)."""
    rows: list[tuple[str, str, list[str], int]] = []
    names: dict[str, str] = {}
    for line in raw.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        frames = stack.split(";")
        process = frames.pop(0).partition(":")[0] if frames[0].startswith("process ") else "process"
        thread = frames.pop(0) if frames and frames[0].startswith("thread (") else "thread (?)"
        tid, _, name = thread.partition(": ")
        if name:  # py-spy names a thread on some samples only
            names[tid] = name
        rows.append((process, tid, frames, int(samples)))
    first = min((r[0] for r in rows), key=lambda p: int(p.split()[-1]) if p[-1].isdigit() else 0,
                default="process")
    threads: dict[str, Counter[str]] = {}
    total = 0
    for process, tid, frames, count in rows:
        # pool threads carry a number each; one row per kind of thread
        name = names.get(tid, tid).rstrip("0123456789").rstrip("_")
        kind = name if process == first else f"{name} (child process)"
        threads.setdefault(kind, Counter())[_phase(frames)] += count
        total += count
    return threads, total


def cprofile_phases(stats: pstats.Stats) -> dict[str, float]:
    """Cumulative seconds of the functions that begin each phase (main thread)."""
    cum: dict[str, float] = defaultdict(float)
    for (filename, _line, name), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{Path(filename).name}:{name}"
        if name == "_find_and_load":
            cum["imports"] = max(cum["imports"], ct)
        elif where == "aggregate.py:aggregate":
            cum["aggregation"] += ct
        elif where in ("convert.py:metadata", "dicomjson.py:encode_attributes"):
            cum["DICOM JSON"] += ct
        elif where == "reader.py:read_instance":
            cum["reading"] += ct
        elif where == "convert.py:write":
            cum["write (incl. JSON)"] += ct
        elif where == "__main__.py:<module>":
            cum["total"] += ct
    cum["writing"] = cum.pop("write (incl. JSON)", 0.0) - cum["DICOM JSON"]
    return dict(cum)


#: Frames that wrap the whole run (the interpreter running the module): no news in a top list.
_WRAPPERS = ("builtins.exec}", "<string>:1(<module>)", "<frozen runpy>", "__main__.py:1(<module>)")


def _top(stats: pstats.Stats, key: str, count: int) -> str:
    out = io.StringIO()
    stats.stream = out  # type: ignore[attr-defined]
    stats.sort_stats(key).print_stats(count + 2 * len(_WRAPPERS))
    lines = out.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls"))
    root = str(Path.cwd()) + "/"
    kept = [line.replace(root, "").replace(".venv/lib/python3.11/site-packages/", "")
            for line in lines[start + 1:] if line.strip() and not any(w in line for w in _WRAPPERS)]
    return "\n".join([lines[start], *kept[:count]])


#: The CLI under cProfile timed by the main thread's CPU time: what the machine's other load takes
#: from it (waiting for a core, or for the disk) is not counted; argv: stats file, then the CLI's.
_PROFILED = """
import cProfile, runpy, sys, time
out, sys.argv = sys.argv[1], sys.argv[2:]
profiler = cProfile.Profile(time.thread_time)
profiler.enable()
try:
    runpy.run_module("static_dicomweb", run_name="__main__")
except SystemExit as exc:
    code = exc.code
else:
    code = 0
profiler.disable()
profiler.dump_stats(out)
sys.exit(code)
"""


def run_cprofile(source: Path, site: Path, workers: int, top: int, out: Path) -> None:
    shutil.rmtree(site, ignore_errors=True)
    started = time.perf_counter()
    # a fresh interpreter, so that every import of the CLI is under the profiler
    argv = ["static-dicomweb", "-q", "convert", str(source), "--out", str(site), "--workers", str(workers)]
    done = subprocess.run([sys.executable, "-c", _PROFILED, str(out), *argv],
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"convert under cProfile exited {done.returncode}: {done.stderr[-2000:]}")
    stats = pstats.Stats(str(out))
    print(f"## cProfile, main thread CPU seconds ({wall:.1f} s wall under the profiler); "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}\n")
    print(f"Top {top} by cumulative time:\n```\n{_top(stats, 'cumulative', top)}\n```\n")
    print(f"Top {top} by own time:\n```\n{_top(stats, 'tottime', top)}\n```\n")
    phases = cprofile_phases(stats)
    total = phases.pop("total")
    print("| phase (main thread) | profiled s | share |\n|---|---|---|")
    for phase in ("imports", "reading", "DICOM JSON", "writing", "aggregation"):
        print(f"| {phase} | {phases.get(phase, 0):.2f} | {phases.get(phase, 0) / total:.0%} |")
    rest = max(0.0, total - sum(phases.values()))  # imports inside a phase count in both
    print(f"| other (walk, duplicates, report, manifest) | {rest:.2f} | {rest / total:.0%} |\n")


def run_py_spy(source: Path, site: Path, workers: int, raw: Path) -> None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("py-spy is not installed (.venv/bin/pip install py-spy): skipped")
        return
    shutil.rmtree(site, ignore_errors=True)
    started = time.perf_counter()
    done = subprocess.run([spy, "record", "--threads", "--idle", "--subprocesses", "--rate", "200",
                           "-f", "raw", "-o", str(raw), "--", *cli_command(), "-q", "convert",
                           str(source), "--out", str(site), "--workers", str(workers)],
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"py-spy exited {done.returncode}: {done.stderr[-2000:]}")
    threads, total = py_spy_phases(raw)
    phases = ("imports", "reading", "DICOM JSON", "writing", "aggregation", "idle", "other")
    print(f"## py-spy, every thread, waiting included, 200 samples/s ({wall:.1f} s with the sampler; "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())})\n")
    print("| thread | samples | " + " | ".join(phases) + " |")
    print("|---|---|" + "---|" * len(phases))
    for name, counts in sorted(threads.items(), key=lambda kv: -sum(kv[1].values())):
        n = sum(counts.values())
        print(f"| {name} | {n} | " + " | ".join(f"{counts[p] / n:.0%}" for p in phases) + " |")
    print(f"\n{int(total)} samples in all; raw stacks in {raw}\n")


def run_stages(source: Path, limit: int) -> None:
    """CPU seconds per instance of each step of one worker, in this process, nothing written."""
    from static_dicomweb.convert import InstanceWriter
    from static_dicomweb.dicomjson import encode_attributes, gzip_bytes
    from static_dicomweb.profiles import get_profile
    from static_dicomweb.reader import read_instance, read_regular_file, sha256_hex
    from static_dicomweb.store import LocalStore

    files = sorted(source.rglob("*.dcm"))
    # every series alike: the same number of slices of each
    by_series: dict[Path, list[Path]] = {}
    for f in files:
        by_series.setdefault(f.parent, []).append(f)
    take = max(1, limit // len(by_series))
    chosen = [f for group in by_series.values() for f in group[:take]]
    writer = InstanceWriter(LocalStore(str(source.parent / "stages-site")), get_profile("default"))
    steps: dict[str, float] = defaultdict(float)
    for path in chosen:
        clock = time.thread_time()
        data = read_regular_file(path)
        sha256 = sha256_hex(data)
        now = time.thread_time()
        steps["read the file + SHA-256"] += now - clock
        clock = now
        inst = read_instance(path, data, sha256)
        now = time.thread_time()
        steps["parse (read_instance)"] += now - clock
        clock = now
        meta = writer.metadata(inst)
        now = time.thread_time()
        steps["DICOM JSON objects (InstanceWriter.metadata)"] += now - clock
        clock = now
        text = encode_attributes(meta)
        now = time.thread_time()
        steps["JSON text (encode_attributes)"] += now - clock
        clock = now
        gzip_bytes(b"[" + text + b"]")
        steps["gzip (gzip_bytes)"] += time.thread_time() - clock
    n = len(chosen)
    print(f"## Steps of one instance, CPU ms per instance (time.thread_time), {n} files of "
          f"{len(by_series)} series; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}\n")
    print("| step | CPU ms per instance |\n|---|---|")
    for step, seconds in steps.items():
        print(f"| {step} | {seconds / n * 1e3:.2f} |")
    print(f"| all of these | {sum(steps.values()) / n * 1e3:.2f} |\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--series", type=int, default=5)
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--work", type=Path, default=Path(".bench"))
    parser.add_argument("--no-py-spy", action="store_true")
    parser.add_argument("--stages-only", action="store_true",
                        help="only the CPU per instance of each step, in this process")
    parser.add_argument("--input", type=Path, default=None,
                        help="profile these files instead of the realistic input")
    args = parser.parse_args()
    source = args.input or realistic_input(args.work, args.series, args.slices, args.size)
    run_stages(source, 200)
    if args.stages_only:
        return 0
    site = args.work / "profile-site"
    run_cprofile(source, site, args.workers, args.top, args.work / "profile-convert.prof")
    if not args.no_py_spy:
        run_py_spy(source, site, args.workers, args.work / "profile-py-spy.txt")
    shutil.rmtree(site, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
