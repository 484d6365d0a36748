"""Conversion: input files → the per-instance objects of a site, then the indexes.

One file is one transaction: it is read and checked completely, checked
against the instance of the same SOP Instance UID already in the site (a site
never silently replaces an instance with different content), then its objects
are written, its metadata last, carrying the SHA-256 of its Part 10 bytes.
Rerunning writes the same keys with the same bytes.  Aggregation (``aggregate.py``) runs after every file.
"""

from __future__ import annotations

import gzip
import json
import logging
import multiprocessing
import os
import pickle
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from . import keys, multipart
from .aggregate import aggregate
from .dicomjson import JsonDict, dataset_to_json, encode_attributes, gzip_bytes
from .errors import ConflictError, RejectedInstanceError
from .profiles import Profile, get_profile
from .qido import instance_row
from .reader import Loaded, SourceInstance, load, plain_us, read_instance
from .store import Store
from .thumbnail import render

log = logging.getLogger(__name__)

DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
#: The user metadata (``x-amz-meta-sha256`` on S3) that records which Part 10 bytes an instance holds.
SHA256_META = "x-amz-meta-sha256"
PROFILE_META = "x-amz-meta-profile"


@dataclass(frozen=True)
class Written:
    """One instance now in the site, with what aggregation needs of it."""

    path: str
    study: str
    series: str
    sop: str
    sha256: str
    frames: int
    #: Its metadata as compact JSON (one object), and its QIDO instance row.
    metadata: bytes = field(repr=False, default=b"")
    row: JsonDict = field(repr=False, default_factory=dict)


@dataclass(frozen=True)
class Rejected:
    """One input file that was not converted, and why."""

    path: str
    reason: str


@dataclass
class ConversionResult:
    """What a conversion did: counts for logs and XCom, rejections for the report."""

    written: list[Written] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no file was rejected."""
        return not self.rejected

    def touched(self) -> list[tuple[str, str]]:
        """The (study, series) pairs that received instances, sorted."""
        return sorted({(w.study, w.series) for w in self.written})

    def report(self) -> JsonDict:
        """The conversion report kept with the site (``_site/conversion-report.json``)."""
        series = [f"{study}/{series}" for study, series in self.touched()]
        return {"instances": len(self.written), "series": series,
                "rejected": [{"path": r.path, "reason": r.reason} for r in self.rejected],
                "skipped": self.skipped}


def collect_files(inputs: Iterable[str | Path]) -> list[Path]:
    """Every file named by ``inputs`` (folders walked), sorted, without duplicates."""
    found: set[Path] = set()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for folder, dirs, files in os.walk(path):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                found.update(Path(folder, f) for f in files if not f.startswith("."))
        else:
            found.add(path)
    return sorted(found)


class InstanceWriter:
    """Writes the objects of single instances to one store under one profile."""

    def __init__(self, store: Store, profile: Profile) -> None:
        self.store = store
        self.profile = profile

    def __call__(self, path: Path, loaded: Loaded | None = None) -> Written | Rejected:
        """Convert one file (``loaded``: its bytes, read ahead); every problem becomes a :class:`Rejected`."""
        try:
            inst = read_instance(path, loaded.data, loaded.sha256) if loaded else read_instance(path)
            return self.write(inst)
        except RejectedInstanceError as exc:
            log.warning("rejected %s: %s", path, exc.reason)
            return Rejected(str(path), exc.reason)


    def write(self, inst: SourceInstance) -> Written:
        """Check the SOP Instance UID against the site, then write every object of ``inst``.

        An instance the site already holds with the same bytes under the same
        profile is complete (its metadata is written last) and is not written
        again: a rerun after an interruption only does what is left.
        """
        if inst.sop_class == DICOMDIR_CLASS:
            raise RejectedInstanceError(inst.path, "a DICOMDIR (media directory), not an instance")
        store, s, se, i = self.store, inst.study, inst.series, inst.sop
        meta_key = keys.instance_metadata(s, se, i).key
        held = store.headers(meta_key) or {}
        if held.get(SHA256_META) not in (None, inst.sha256):
            raise ConflictError(
                inst.path, f"SOP Instance UID {i} is already in the site with different content "
                           f"(sha256 {held[SHA256_META][:12]}…, this file {inst.sha256[:12]}…); "
                           "not replaced")
        if held.get(SHA256_META) == inst.sha256 and held.get(PROFILE_META) == self.profile.name:
            text = gzip.decompress(store.get(meta_key))[1:-1]
            return Written(inst.path, s, se, i, inst.sha256, len(inst.frames), text,
                           instance_row(json.loads(text)))
        meta = self.metadata(inst)
        for number, data in enumerate(inst.frames, start=1):
            spec = keys.frame(s, se, i, number, inst.syntax.media_type, inst.syntax.frame_syntax)
            part_type = f"{inst.syntax.media_type}; transfer-syntax={inst.syntax.frame_syntax}"
            store.put(spec, multipart.single(spec, part_type, data))
        if self.profile.instance_p10:
            spec = keys.instance(s, se, i)
            store.put(spec, multipart.single(spec, "application/dicom", inst.p10))
        if self.profile.instance_thumbnails and inst.frames:
            from .thumbnail import decode_frame

            pixels = decode_frame(meta, inst.frames[0], inst.syntax.frame_syntax, inst.syntax.native)
            store.put(keys.instance_thumbnail(s, se, i), [render(meta, pixels)])
        text = encode_attributes(meta)
        store.put(keys.instance_metadata(s, se, i), [gzip_bytes(b"[" + text + b"]")],
                  meta={"sha256": inst.sha256, "profile": self.profile.name})
        return Written(inst.path, s, se, i, inst.sha256, len(inst.frames), text, instance_row(meta))

    def metadata(self, inst: SourceInstance) -> JsonDict:
        """The instance's WADO-RS metadata; large binary values become bulk data objects."""
        s, se, i = inst.study, inst.series, inst.sop
        series_key = f"studies/{s}/series/{se}"

        def bulk(tag_path: str, data: bytes | memoryview) -> str:
            if tag_path == "7fe00010" and inst.number_of_frames == 1 and inst.frames:
                spec = keys.frame(s, se, i, 1, inst.syntax.media_type, inst.syntax.frame_syntax)
            else:
                spec = keys.bulkdata(s, se, i, tag_path)
                self.store.put(spec, multipart.single(spec, "application/octet-stream", data))
            return keys.bulkdata_uri(series_key, spec.key)

        meta = dataset_to_json(inst.dataset, bulk)
        if inst.pixel_view is not None:  # read without copying, so not in the dataset
            vr = "OW" if plain_us(inst.dataset, 0x00280100, "BitsAllocated") > 8 else "OB"
            meta["7FE00010"] = {"vr": vr, "BulkDataURI": bulk("7fe00010", inst.pixel_view)}
        meta["00020010"] = {"vr": "UI", "Value": [inst.syntax.uid]}
        return dict(sorted(meta.items()))


#: Files read ahead of the one being converted, in one process.
READ_AHEAD = 2


def _pool_init(store: Store, profile: Profile) -> None:
    global _WORKER
    # a copy made through pickle: each worker opens its own connections (boto3 clients are not
    # safe to share across fork)
    _WORKER = InstanceWriter(pickle.loads(pickle.dumps(store)), profile)


_WORKER: InstanceWriter | None = None


def _pool_run(path: Path) -> Written | Rejected:
    assert _WORKER is not None
    return _WORKER(path)


def _run(files: Sequence[Path], store: Store, profile: Profile,
         workers: int) -> Iterator[Written | Rejected]:
    if workers <= 1 or len(files) < 2:
        writer = InstanceWriter(store, profile)
        # a thread reads and hashes the next files while this one parses and writes
        with ThreadPoolExecutor(1, thread_name_prefix="sdw-read") as reader:
            ahead: deque[tuple[Path, Future[Loaded | None]]] = deque()
            for path in files:
                ahead.append((path, reader.submit(load, path)))
                if len(ahead) > READ_AHEAD:
                    done, loading = ahead.popleft()
                    yield writer(done, loading.result())
            while ahead:
                done, loading = ahead.popleft()
                yield writer(done, loading.result())
        return
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers, initializer=_pool_init, initargs=(store, profile)) as pool:
        chunk = max(1, min(16, len(files) // (workers * 8)))
        yield from pool.imap_unordered(_pool_run, files, chunksize=chunk)


def convert_files(inputs: Iterable[str | Path], store: Store, *, profile: str | Profile = "default",
                  workers: int = 1, progress: bool = False) -> ConversionResult:
    """Write the per-instance objects of Part 10 files; no indexes (see :func:`convert`).

    The Airflow DAG maps this over batches of series, then aggregates once.
    """
    started = time.perf_counter()
    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    files = collect_files(inputs)
    log.info("converting %d files into %s (profile %s, %d workers)", len(files), store.url,
             prof.name, workers)
    result = ConversionResult()
    bar = _progress(len(files), progress)
    for outcome in _run(files, store, prof, workers):
        if isinstance(outcome, Written):
            result.written.append(outcome)
        else:
            result.rejected.append(outcome)
        bar.update(1)
    bar.close()
    result.written.sort(key=lambda w: (w.study, w.series, w.sop))
    result.rejected.sort(key=lambda r: r.path)
    result.seconds = time.perf_counter() - started
    return result


def convert(inputs: Iterable[str | Path], store: Store, *, profile: str | Profile = "default",
            workers: int = 1, progress: bool = False) -> ConversionResult:
    """Convert Part 10 files into a site in ``store``.

    Parameters
    ----------
    inputs
        Files and folders (walked recursively; hidden entries skipped).
    store
        The site's store.
    profile
        Which optional objects to write (:mod:`static_dicomweb.profiles`).
    workers
        Processes that read and write instances in parallel.
    progress
        Show a progress bar on standard error.

    Returns
    -------
    ConversionResult
        Written and rejected files.  The conversion report and the manifest
        are in the site when this returns.

    """
    started = time.perf_counter()
    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    result = convert_files(inputs, store, profile=prof, workers=workers, progress=progress)
    touched = result.touched()
    known = {w.sop: (w.metadata, w.row) for w in result.written}
    aggregate(store, touched, prof, report=result.report(), known=known)
    result.seconds = time.perf_counter() - started
    log.info("converted %d instances of %d series in %.2f s; %d rejected", len(result.written),
             len(touched), result.seconds, len(result.rejected))
    return result


class _NoBar:
    def update(self, n: int) -> None:
        """Nothing to show."""

    def close(self) -> None:
        """Nothing to close."""


def _progress(total: int, show: bool) -> _NoBar:
    if not show:
        return _NoBar()
    from tqdm import tqdm

    return cast(_NoBar, tqdm(total=total, unit="file", desc="convert", leave=False))
