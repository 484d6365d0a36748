"""Is the site byte-for-byte what an earlier commit wrote?  Converts the same inputs with both.

The earlier library is ``git archive REV include`` unpacked under ``--work``;
each conversion is ``python -m static_dicomweb convert`` in a child process
with that tree (or this checkout's ``include/``) first on ``PYTHONPATH``.
Inputs, made once under ``--work``:

- ``sample``: the sample generator's default data set (every transfer
  syntax it writes, a multi-frame series, a localizer);
- ``realistic``: ``realistic.py``'s NLST-like headers, 5 series × 20 slices
  of 128×128, undefined lengths as CTP writes them, the last series Implicit VR;
- ``realistic-defined``: the same headers with defined lengths;
- ``pydicom``: every file of pydicom's own test files (the ones that are
  not valid CT instances are rejected, by both, with the same report).

Every object of both sites is compared, the conversion report and the
manifest included: the same keys, the same bytes.  Exit 0 when every input
gives the same site.  Run::

    .venv/bin/python bench/same_site.py --base 5623252
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pydicom

from realistic import write_realistic
from static_dicomweb_sample import generate_sample

ROOT = Path(__file__).resolve().parent.parent


def _sample(out: Path) -> None:
    generate_sample(out)


def _realistic(out: Path) -> None:
    write_realistic(out, series=5, slices=20, size=128)


def _realistic_defined(out: Path) -> None:
    write_realistic(out, series=5, slices=20, size=128, undefined_lengths=False)


def _pydicom(out: Path) -> None:
    shutil.copytree(Path(pydicom.__file__).parent / "data" / "test_files", out)


INPUTS: dict[str, Callable[[Path], None]] = {
    "sample": _sample, "realistic": _realistic, "realistic-defined": _realistic_defined,
    "pydicom": _pydicom,
}


def library_of(rev: str, work: Path) -> Path:
    """The ``include/`` folder of ``rev``, unpacked under ``work`` (once per commit)."""
    commit = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout.strip()
    tree = work / f"tree-{commit[:12]}"
    if not (tree / "include").is_dir():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", commit, "include"], cwd=ROOT, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree / "include"


def convert(library: Path, source: Path, site: Path, workers: int) -> int:
    """``static-dicomweb convert source --out site`` with ``library`` first on the path.

    Returns its exit status (1 where some files were rejected, as in pydicom's test files).
    """
    shutil.rmtree(site, ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=f"{library}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    return subprocess.run([sys.executable, "-m", "static_dicomweb", "convert", str(source), "--out",
                           str(site), "--workers", str(workers)], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode


def _objects(site: Path) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for path in site.rglob("*"):
        key = path.relative_to(site).as_posix()
        if path.is_file() and key != "_site/.lock":
            found[key] = path.read_bytes()
    return found


def differences(before: Path, after: Path) -> list[str]:
    """What differs between two site folders, a line each (empty: the same)."""
    old, new = _objects(before), _objects(after)
    lines = [f"only before: {key}" for key in sorted(old.keys() - new.keys())]
    lines += [f"only after: {key}" for key in sorted(new.keys() - old.keys())]
    lines += [f"bytes differ: {key}" for key in sorted(old.keys() & new.keys()) if old[key] != new[key]]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the earlier commit")
    parser.add_argument("--inputs", nargs="+", choices=sorted(INPUTS), default=list(INPUTS))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--work", type=Path, default=ROOT / ".bench" / "same-site")
    parser.add_argument("--keep", action="store_true", help="keep both sites under --work")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    base = library_of(args.base, args.work)
    failed = 0
    for name in args.inputs:
        source = args.work / f"input-{name}"
        if not source.exists():
            with tempfile.TemporaryDirectory(dir=args.work) as scratch:
                INPUTS[name](Path(scratch) / "made")
                (Path(scratch) / "made").rename(source)
        before, after = args.work / f"{name}-before", args.work / f"{name}-after"
        status = convert(base, source, before, args.workers), \
            convert(ROOT / "include", source, after, args.workers)
        diff = differences(before, after)
        if status[0] != status[1]:
            diff.insert(0, f"exit status {status[0]} before, {status[1]} after")
        count = len(_objects(after))
        print(f"{name}: {'the same' if not diff else 'DIFFERENT'} ({count} objects, exit "
              f"status {status[1]})")
        for line in diff[:20]:
            print(f"  {line}")
        failed += bool(diff)
        if not args.keep:
            shutil.rmtree(before)
            shutil.rmtree(after)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
