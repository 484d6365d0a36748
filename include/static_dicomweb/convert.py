"""Conversion: input files → the per-instance objects of a site, then the indexes.

One file is one transaction: it is read and checked completely, then its SOP
Instance UID is claimed in the site with a create-only identity record
(``_site/instances/{xx}/{I}.json``: study, series, SHA-256 of the Part 10
bytes, profile).  An SOP Instance UID names one object in the whole site: a
file whose UID the site holds with other content, in any series of any study,
is rejected and nothing is replaced.  Then its objects are written, its
metadata last.  Rerunning writes the same keys with the same bytes.
Aggregation (``aggregate.py``) runs after every file.
"""

from __future__ import annotations

import gzip
import json
import logging
import multiprocessing
import os
import pickle
import stat
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import keys, multipart
from .aggregate import aggregate
from .dicomjson import JsonDict, dataset_to_json, encode, encode_attributes, gzip_bytes
from .errors import ConflictError, ObjectExistsError, RejectedInstanceError
from .keys import ObjectSpec
from .profiles import Profile, get_profile
from .progress import Progress, file_size
from .qido import instance_row
from .reader import SourceInstance, plain_us, read_instance
from .store import Piece, Store
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
    #: Whether this write claimed the SOP Instance UID (it was not in the site before).
    claimed: bool = False


@dataclass(frozen=True)
class Rejected:
    """One input file that was not converted, and why."""

    path: str
    reason: str
    #: For a conflicting duplicate: its SOP Instance UID and the SHA-256 of its bytes.
    sop: str = ""
    sha256: str = ""


@dataclass(frozen=True)
class Skipped:
    """An input that is not a file to convert (hidden, a FIFO, a socket, a device, ...)."""

    path: str
    reason: str


@dataclass
class ConversionResult:
    """What a conversion did: counts for logs and XCom, rejections for the report."""

    written: list[Written] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
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
                "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped]}


def _not_regular(path: Path) -> str | None:
    """Why ``path`` is not a file to read, from ``stat`` alone (a FIFO is never opened).

    None for a regular file, and for a path that cannot be examined (missing,
    a dangling link, no permission): reading it names that reason.
    """
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe), not a regular file; not read"
    if stat.S_ISSOCK(mode):
        return "a socket, not a regular file; not read"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device, not a regular file; not read"
    return "not a regular file; not read"


def scan_inputs(inputs: Iterable[str | Path]) -> tuple[list[Path], list[Skipped]]:
    """The files to convert that ``inputs`` name (folders walked), and what was skipped.

    Files come sorted, without duplicates.  In a folder, hidden entries (name
    starting with a dot) are skipped, and so are links to folders (not
    followed); anything that is not a regular file (FIFO, socket, device) is
    skipped wherever it is named.  Each skipped entry comes with its reason.
    """
    found: set[Path] = set()
    skipped: dict[str, str] = {}
    for item in inputs:
        path = Path(item)
        if not path.is_dir():
            why = _not_regular(path)
            if why:
                skipped[str(path)] = why
            else:
                found.add(path)
            continue
        for folder, dirs, files in os.walk(path):
            walked = []
            for name in dirs:
                sub = Path(folder, name)
                if name.startswith("."):
                    skipped[str(sub)] = "a hidden folder (its name starts with a dot); not read"
                elif sub.is_symlink():
                    skipped[str(sub)] = "a link to a folder; not followed"
                else:
                    walked.append(name)
            dirs[:] = walked
            for name in files:
                file = Path(folder, name)
                why = ("a hidden file (its name starts with a dot); not read"
                       if name.startswith(".") else _not_regular(file))
                if why:
                    skipped[str(file)] = why
                else:
                    found.add(file)
    return sorted(found), [Skipped(p, skipped[p]) for p in sorted(skipped)]


def collect_files(inputs: Iterable[str | Path]) -> list[Path]:
    """Every file to convert that ``inputs`` name (see :func:`scan_inputs`), sorted."""
    return scan_inputs(inputs)[0]


def _conflict_reason(inst: SourceInstance, held: JsonDict) -> str:
    where = f"studies/{held.get('study')}/series/{held.get('series')}"
    mine = f"studies/{inst.study}/series/{inst.series}"
    this = "" if where == mine else f", for {mine}"
    return (f"SOP Instance UID {inst.sop} is already in the site with different content, at "
            f"{where} (sha256 {str(held.get('sha256'))[:12]}…; this file {inst.sha256[:12]}…"
            f"{this}); not replaced")


def _delete_instance(store: Store, study: str, series: str, sop: str) -> None:
    """Remove every object of an instance, its metadata (what makes it complete) first."""
    store.delete(keys.instance_metadata(study, series, sop).key)
    prefix = keys.instance_prefix(study, series, sop)
    found = [prefix]
    folders = [prefix + "/"]
    while folders:
        folder = folders.pop()
        for name in store.children(folder):
            found.append(folder + name)
            folders.append(folder + name + "/")
    for key in found:
        store.delete(key)


#: One write: the object, its pieces and its user metadata.
Write = tuple[ObjectSpec, Sequence[Piece], dict[str, str] | None]


def _put_all(store: Store, writes: Sequence[Write], undo: str | None) -> None:
    """Write ``writes`` in order; at the first that fails, delete the key ``undo`` (if any) and raise."""
    try:
        for spec, pieces, meta in writes:
            store.put(spec, pieces, meta)
    except BaseException:
        if undo:
            store.delete(undo)
        raise


class InstanceWriter:
    """Writes the objects of single instances to one store under one profile.

    Parameters
    ----------
    store, profile
        Where, and which objects.
    writer
        A thread that stores each instance's objects, in order, while this
        one reads and converts the next file (its future is :attr:`pending`
        after each call); None (default): they are stored before a call returns.

    """

    def __init__(self, store: Store, profile: Profile, writer: Executor | None = None) -> None:
        self.store = store
        self.profile = profile
        self.writer = writer
        #: The writes of the last instance, while the writer thread stores them.
        self.pending: Future[None] | None = None

    def __call__(self, path: Path) -> Written | Rejected:
        """Convert one file; every problem becomes a :class:`Rejected`."""
        self.pending = None
        try:
            inst = read_instance(path)
        except RejectedInstanceError as exc:
            log.warning("rejected %s: %s", path, exc.reason)
            return Rejected(str(path), exc.reason)
        try:
            return self.write(inst)
        except ConflictError as exc:
            log.warning("rejected %s: %s", path, exc.reason)
            return Rejected(str(path), exc.reason, inst.sop, inst.sha256)
        except RejectedInstanceError as exc:
            log.warning("rejected %s: %s", path, exc.reason)
            return Rejected(str(path), exc.reason)

    def _record(self, inst: SourceInstance) -> bytes:
        return encode({"profile": self.profile.name, "series": inst.series,
                       "sha256": inst.sha256, "study": inst.study})

    def write(self, inst: SourceInstance) -> Written:
        """Claim the SOP Instance UID in the site, then write every object of ``inst``.

        The identity record is created only if absent, so of two writers of one
        UID (two converters, STOW-RS) exactly one claims it; the other reads
        where it is.  An instance the site already holds with the same bytes
        under the same profile is complete (its metadata is written last) and
        is not written again: a rerun after an interruption only does what is left.

        Raises
        ------
        ConflictError
            When the site holds the SOP Instance UID with other content, in
            any series of any study.

        """
        if inst.sop_class == DICOMDIR_CLASS:
            raise RejectedInstanceError(inst.path, "a DICOMDIR (media directory), not an instance")
        store, s, se, i = self.store, inst.study, inst.series, inst.sop
        meta_key = keys.instance_metadata(s, se, i).key
        record = keys.instance_record(i)
        try:
            store.put(record, [self._record(inst)], if_absent=True)
        except ObjectExistsError:
            held = json.loads(store.get(record.key))
            if (held.get("study"), held.get("series"), held.get("sha256")) != (s, se, inst.sha256):
                raise ConflictError(inst.path, _conflict_reason(inst, held)) from None
            if held.get("profile") == self.profile.name and store.headers(meta_key) is not None:
                return self._stored(inst)
            # a new profile is recorded once its objects are written
            then: list[Write] = [] if held.get("profile") == self.profile.name else \
                [(record, [self._record(inst)], None)]
            return self._write_objects(inst, claimed=False, then=then)
        # claimed now; a site written before identity records may hold the UID at this key
        before = store.headers(meta_key) or {}
        if before.get(SHA256_META) not in (None, inst.sha256):
            held = {"profile": before.get(PROFILE_META, ""), "series": se,
                    "sha256": before[SHA256_META], "study": s}
            store.put(record, [encode(held)])
            raise ConflictError(inst.path, _conflict_reason(inst, held))
        if before and before.get(PROFILE_META) == self.profile.name:
            return self._stored(inst)
        # if a write fails, give the UID back: nothing of this instance is in the site
        return self._write_objects(inst, claimed=not before, undo=None if before else record.key)

    def replace(self, inst: SourceInstance, old: Written) -> Written:
        """Put ``inst`` in the place of ``old`` (same SOP Instance UID), which this run wrote."""
        store = self.store
        store.put(keys.instance_record(inst.sop), [self._record(inst)])
        _delete_instance(store, old.study, old.series, old.sop)
        return self._write_objects(inst, claimed=True)

    def _stored(self, inst: SourceInstance) -> Written:
        """The instance as the site holds it (complete, the same bytes)."""
        s, se, i = inst.study, inst.series, inst.sop
        text = gzip.decompress(self.store.get(keys.instance_metadata(s, se, i).key))[1:-1]
        return Written(inst.path, s, se, i, inst.sha256, len(inst.frames), text,
                       instance_row(json.loads(text)))

    def _write_objects(self, inst: SourceInstance, *, claimed: bool, then: Sequence[Write] = (),
                       undo: str | None = None) -> Written:
        """Every object of ``inst``, its metadata last, then ``then``; at a failure, delete ``undo``.

        The objects are computed here and stored here or, with a writer
        thread, by it (:attr:`pending`).
        """
        s, se, i = inst.study, inst.series, inst.sop
        try:
            writes, meta, text = self._objects(inst)
        except BaseException:
            if undo:
                self.store.delete(undo)
            raise
        writes += then
        if self.writer is None:
            _put_all(self.store, writes, undo)
        else:
            self.pending = self.writer.submit(_put_all, self.store, writes, undo)
        return Written(inst.path, s, se, i, inst.sha256, len(inst.frames), text, instance_row(meta),
                       claimed)

    def _objects(self, inst: SourceInstance) -> tuple[list[Write], JsonDict, bytes]:
        """The writes of every object of ``inst``, its metadata last; the metadata and its text."""
        s, se, i = inst.study, inst.series, inst.sop
        writes: list[Write] = []
        meta = self.metadata(inst, writes)
        for number, data in enumerate(inst.frames, start=1):
            spec = keys.frame(s, se, i, number, inst.syntax.media_type, inst.syntax.frame_syntax)
            part_type = f"{inst.syntax.media_type}; transfer-syntax={inst.syntax.frame_syntax}"
            writes.append((spec, multipart.single(spec, part_type, data), None))
        if self.profile.instance_p10:
            spec = keys.instance(s, se, i)
            writes.append((spec, multipart.single(spec, "application/dicom", inst.p10), None))
        if self.profile.instance_thumbnails and inst.frames:
            from .thumbnail import decode_frame

            pixels = decode_frame(meta, inst.frames[0], inst.syntax.frame_syntax, inst.syntax.native)
            writes.append((keys.instance_thumbnail(s, se, i), [render(meta, pixels)], None))
        text = encode_attributes(meta)
        writes.append((keys.instance_metadata(s, se, i), [gzip_bytes(b"[" + text + b"]")],
                       {"sha256": inst.sha256, "profile": self.profile.name}))
        return writes, meta, text

    def metadata(self, inst: SourceInstance, writes: list[Write] | None = None) -> JsonDict:
        """The instance's WADO-RS metadata; large binary values become bulk data objects.

        Their writes are added to ``writes`` (None: stored at once).
        """
        s, se, i = inst.study, inst.series, inst.sop
        series_key = f"studies/{s}/series/{se}"

        def bulk(tag_path: str, data: bytes | memoryview) -> str:
            if tag_path == "7fe00010" and inst.number_of_frames == 1 and inst.frames:
                spec = keys.frame(s, se, i, 1, inst.syntax.media_type, inst.syntax.frame_syntax)
            else:
                spec = keys.bulkdata(s, se, i, tag_path)
                pieces = multipart.single(spec, "application/octet-stream", data)
                if writes is None:
                    self.store.put(spec, pieces)
                else:
                    writes.append((spec, pieces, None))
            return keys.bulkdata_uri(series_key, spec.key)

        meta = dataset_to_json(inst.dataset, bulk)
        if inst.pixel_view is not None:  # read without copying, so not in the dataset
            vr = "OW" if plain_us(inst.dataset, 0x00280100, "BitsAllocated") > 8 else "OB"
            meta["7FE00010"] = {"vr": vr, "BulkDataURI": bulk("7fe00010", inst.pixel_view)}
        meta["00020010"] = {"vr": "UI", "Value": [inst.syntax.uid]}
        return dict(sorted(meta.items()))


#: Instances whose objects a writer thread may still be storing.
WRITES_BEHIND = 8


def convert_each(files: Iterable[Path], store: Store, profile: Profile) -> Iterator[Written | Rejected]:
    """Convert ``files`` in turn in this process; each outcome once its objects are stored.

    A writer thread stores each instance's objects while this thread
    converts the next file: the writes' system calls and network waits
    leave the GIL to it.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="sdw-write") as thread:
        converter = InstanceWriter(store, profile, thread)
        behind: deque[tuple[Written | Rejected, Future[None] | None]] = deque()
        for path in files:
            behind.append((converter(path), converter.pending))
            while behind and (len(behind) > WRITES_BEHIND or _stored(behind[0][1])):
                yield _after(*behind.popleft())
        while behind:
            yield _after(*behind.popleft())


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
    """Each file converted whole by one of ``workers`` processes (one: this process), in any order.

    Conversion is CPU work in Python (parsing, DICOM JSON, gzip), so
    processes are how it uses more cores; each converts whole files and
    writes their objects through its own store.  One worker, this process,
    leaves its writes to a thread (:func:`convert_each`), which the other
    core runs; with a worker per core, such threads only trade the GIL
    (docs/benchmarks.md), so a worker process writes each file's objects itself.
    """
    if workers <= 1 or len(files) < 2:
        yield from convert_each(files, store, profile)
        return
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers, initializer=_pool_init, initargs=(store, profile)) as pool:
        chunk = max(1, min(16, len(files) // (workers * 8)))
        yield from pool.imap_unordered(_pool_run, files, chunksize=chunk)


def _stored(writes: Future[None] | None) -> bool:
    return writes is None or writes.done()


def _after(outcome: Written | Rejected, writes: Future[None] | None) -> Written | Rejected:
    """``outcome`` once its writes are stored (raising the first that failed)."""
    if writes is not None:
        writes.result()
    return outcome


def convert_files(inputs: Iterable[str | Path], store: Store, *, profile: str | Profile = "default",
                  workers: int = 1, progress: bool = False) -> ConversionResult:
    """Write the per-instance objects of Part 10 files; no indexes (see :func:`convert`).

    The Airflow DAG maps this over batches of series, then aggregates once.
    """
    started = time.perf_counter()
    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    files, skipped = scan_inputs(inputs)
    for entry in skipped:
        log.warning("skipped %s: %s", entry.path, entry.reason)
    log.info("converting %d files into %s (profile %s, %d workers)", len(files), store.url,
             prof.name, workers)
    result = ConversionResult(skipped=skipped)
    # a bar on a terminal, else a progress line in the log every few seconds (Airflow task logs)
    bar = Progress("convert", len(files), bar=progress)
    for outcome in _run(files, store, prof, workers):
        if isinstance(outcome, Written):
            result.written.append(outcome)
        else:
            result.rejected.append(outcome)
        bar.update(1, nbytes=file_size(outcome.path),
                   series=(outcome.study, outcome.series) if isinstance(outcome, Written) else None)
    bar.close()
    _settle_duplicates(result, store, prof)
    result.written.sort(key=lambda w: (w.study, w.series, w.sop, w.path))
    result.rejected.sort(key=lambda r: r.path)
    result.seconds = time.perf_counter() - started
    return result


def _settle_duplicates(result: ConversionResult, store: Store, profile: Profile) -> None:
    """Files of this run that share an SOP Instance UID with other content: the first path wins.

    Which of them claimed the UID first depends on the workers' timing; so
    when a later file (in path order) claimed it in this run, the first file
    is put in its place here, before any index names either.  A UID that was
    in the site before this run stays as it was.  The losers are rejected,
    each naming the file that was kept.
    """
    rivals: dict[str, list[Rejected]] = {}
    for rejected in result.rejected:
        if rejected.sop:
            rivals.setdefault(rejected.sop, []).append(rejected)
    for sop in sorted(rivals):
        holders = [w for w in result.written if w.sop == sop]
        if any(w.claimed for w in holders):  # else the site held it before this run: never replaced
            _settle_uid(result, store, profile, sop, holders, rivals[sop])


def _settle_uid(result: ConversionResult, store: Store, profile: Profile, sop: str,
                holders: list[Written], rivals: list[Rejected]) -> None:
    """One SOP Instance UID of :func:`_settle_duplicates`: keep the first path, reject the others."""
    first_path = min([w.path for w in holders] + [r.path for r in rivals])
    held = {w.path: w for w in holders}
    kept = held.get(first_path, holders[0])
    losers: list[str] = []
    if first_path not in held:
        kept, losers = _keep_first(result, store, profile, sop, first_path, holders, rivals)
    losers += [r.path for r in rivals if r.sha256 != kept.sha256]
    reason = (f"SOP Instance UID {sop} is also in {kept.path}, with different content, "
              f"converted in this run to studies/{kept.study}/series/{kept.series}; of the "
              "files of one run that share an SOP Instance UID the first in path order is "
              "kept; not converted")
    result.rejected = [r for r in result.rejected if r.sop != sop]
    result.rejected += [Rejected(path, reason, sop) for path in losers]


def _keep_first(result: ConversionResult, store: Store, profile: Profile, sop: str, first_path: str,
                holders: list[Written], rivals: list[Rejected]) -> tuple[Written, list[str]]:
    """Put the first file in path order in the place of the one that claimed the UID.

    Returns the instance kept and the paths that lose to it; the holder stays (and nothing
    loses yet) when the first file no longer converts.
    """
    try:
        inst = read_instance(first_path)
        kept = InstanceWriter(store, profile).replace(inst, holders[0])
    except RejectedInstanceError as exc:  # it changed since: the holder stays
        log.warning("%s: %s", first_path, exc.reason)
        return holders[0], []
    log.warning("SOP Instance UID %s: %s is kept in the place of %s (first in path "
                "order)", sop, first_path, holders[0].path)
    same = [r.path for r in rivals if r.sha256 == kept.sha256]
    result.written = [w for w in result.written if w.sop != sop]
    result.written += [replace(kept, path=path, claimed=path == first_path) for path in same]
    return kept, [w.path for w in holders]


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
    log.info("converted %d instances of %d series in %.2f s; %d rejected, %d skipped",
             len(result.written), len(touched), result.seconds, len(result.rejected),
             len(result.skipped))
    return result
