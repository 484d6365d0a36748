"""Index aggregation: series, study and root indexes from the instances in a site.

Incremental: a touched series rebuilds its own indexes from its instances'
metadata, then its study's indexes from the study's series records, then the
root ``studies`` and ``series`` are merged row by row.  Nothing else is read
or written.  Everything runs under the store's lock, and every index is
written after the objects it names, the manifest last.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar, cast

from . import __version__, keys, multipart, routing
from .dicomjson import JsonDict, decode, encode, first, gzip_bytes
from .errors import KeyNotFoundError
from .offload import ChildWriter
from .profiles import Profile
from .progress import tracked
from .qido import (
    SERIES_UID,
    STUDY_UID,
    instance_row,
    series_row,
    sort_key_instance,
    sort_key_series,
    study_row,
)
from .reader import SYNTAXES
from .store import LocalStore, Slice, Store
from .thumbnail import decode_frame, render

log = logging.getLogger(__name__)
LAYOUT_VERSION = "1"
#: Modalities whose query answers exist even when empty: MONAI Label asks ``series?Modality=SEG``
#: (and its search filter, CT by default) on every site, and S3 answers a missing key with 403/404.
ALWAYS_ANSWERED_MODALITIES = ("CT", "SEG")
#: The header recording how many rows a query answer holds (``x-amz-meta-rows`` on S3).
ROWS_META = "x-amz-meta-rows"
#: Writer threads for a local folder: one.  Its writes are file-system calls, CPU-bound in the
#: kernel, and threads contend for the folder's lock and the GIL, so more threads made a full
#: NLST-size build slower, not faster (docs/benchmarks.md) ...
LOCAL_WRITE_THREADS = 1
#: ... while S3 PUTs wait on the network: as many threads as the S3 client's connection pool.
REMOTE_WRITE_THREADS = 32
#: Writes submitted on a local folder before the rest move to child processes (a few seconds
#: of writes: a small merge never starts one) ...
OFFLOAD_AFTER = 64
#: ... and how many, at most: each child overlaps the kernel's work with the merging process's
#: Python; a second one still shortened a full NLST-size build on 2 cores (docs/benchmarks.md).
WRITE_PROCESSES = 2
#: Answers from this many rows or more (both waves) are written in the merging process itself.
LARGE_GROUP = 10_000
#: Small query answers written per task (one task per object costs more than the object).
_BATCH = 256
_T = TypeVar("_T")
_R = TypeVar("_R")


def write_processes() -> int:
    """How many child processes write a local folder's objects, once there are many."""
    return max(1, min(WRITE_PROCESSES, os.cpu_count() or 1))


def write_threads(store: Store) -> int:
    """How many writes :class:`Writer` runs at once on ``store`` by default."""
    return LOCAL_WRITE_THREADS if isinstance(store, LocalStore) else REMOTE_WRITE_THREADS


class Writer:
    """Runs a store's writes on a few threads; :meth:`wait` returns once every one is done.

    A full build writes hundreds of thousands of small objects (query answers
    above all), each a PUT on S3 or a file creation in a folder.  Writes
    submitted before a :meth:`wait` are stored (or have raised) when it
    returns, so the ordering rules (pages before the answer counting them,
    objects before the index naming them, the manifest last) are kept by
    waiting between waves.  With ``threads=1`` the writes run in the
    caller's thread, except on a local folder once a merge is large: then
    in child processes (``offload``).

    Parameters
    ----------
    store
        The site's store; its ``put``/``get``/``headers``/``delete`` must be
        safe to call from several threads (the local and the S3 store are).
    threads
        How many writes run at once (default: :func:`write_threads`).
    offload
        For one thread on a local folder: run the writes in child processes
        (:mod:`.offload`, :func:`write_processes` of them), beside this one.
        None (default): once :data:`OFFLOAD_AFTER` writes were submitted, so
        a small merge starts no process and a full build overlaps computing
        with writing.

    """

    def __init__(self, store: Store, threads: int | None = None,
                 offload: bool | None = None) -> None:
        self.store = store
        self.threads = write_threads(store) if threads is None else threads
        self._pool: ThreadPoolExecutor | None = None
        self._child: ChildWriter | None = None
        self._submitted = 0
        #: submits after which writes move to child processes (None: never)
        self._offload_after: int | None = None
        if self.threads <= 1 and isinstance(store, LocalStore) and offload is not False:
            self._offload_after = 0 if offload else OFFLOAD_AFTER
        if self.threads > 1:
            # an S3 client is made on first use, and boto3 does not make clients safely from
            # several threads at once: use the store once from this thread
            store.headers(keys.manifest().key)
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="sdw-write")
        self._pending: deque[Future[None]] = deque()
        self._limit = 64 * self.threads

    def submit(self, fn: Callable[..., None], *args: object) -> None:
        """Run ``fn(*args)`` (module-level ``fn``, picklable arguments) on the threads or children.

        On threads a few hundred writes wait at most, so memory stays flat; a
        child process is sent one batch at a time.
        """
        if self._pool is not None:
            while len(self._pending) >= self._limit:
                self._pending.popleft().result()
            self._pending.append(self._pool.submit(fn, *args))
            return
        if self._child is None and self._offload_after is not None \
                and self._submitted >= self._offload_after:
            self._child = ChildWriter(cast(LocalStore, self.store), write_processes())
        self._submitted += 1
        if self._child is not None:
            self._child.submit(fn, *args)
        else:
            fn(*args)

    def submit_large(self, fn: Callable[..., None], *args: object) -> None:
        """Like :meth:`submit`, for a write whose arguments are large (the roots' rows).

        On threads it is submitted; with writer processes it runs here, in
        this process, which holds those arguments already: copied to a child,
        a full NLST-size build's root rows took a gigabyte in each.  Submit it
        after the small writes of its wave, so the children have work meanwhile.
        """
        if self._pool is None:
            fn(*args)
        else:
            self.submit(fn, *args)

    def map(self, fn: Callable[[_T], _R], items: Iterable[_T]) -> Iterator[_R]:
        """``fn`` over ``items`` on the pool, lazily, results in order."""
        if self._pool is None:
            yield from map(fn, items)
            return
        window: deque[Future[_R]] = deque()
        for item in items:
            window.append(self._pool.submit(fn, item))
            if len(window) >= self._limit:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()

    def wait(self) -> None:
        """Block until every submitted write is done; raise the first error."""
        if self._child is not None:
            self._child.wait()
        while self._pending:
            self._pending.popleft().result()

    def close(self) -> None:
        """Wait for the writes, then stop the threads."""
        try:
            self.wait()
        finally:
            self._stop()

    def _stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._child is not None:
            self._child.abandon()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if kind is None:
            self.close()
            return
        self._pending.clear()  # an error is on its way out: do not wait on what follows it
        self._stop()


def _put_json(store: Store, spec: keys.ObjectSpec, obj: object) -> None:
    data = encode(obj)
    store.put(spec, [gzip_bytes(data) if spec.content_encoding == keys.GZIP else data])


def _get_json(store: Store, key: str) -> object:
    return decode(store.get(key))


#: SOP Instance UID → (metadata as compact JSON, QIDO instance row), from this run's conversion.
Known = Mapping[str, tuple[bytes, JsonDict]]


def aggregate(store: Store, touched: Sequence[tuple[str, str]], profile: Profile,
              report: JsonDict | None = None, known: Known | None = None) -> None:
    """Rebuild the indexes that ``touched`` (study, series) pairs change, then the manifest.

    ``known`` holds what this run converted, so it is not read back from the store.
    """
    with store.lock(), Writer(store) as writer:
        studies = sorted({study for study, _ in touched})
        # series are independent of each other, studies too; a study reads its series' records
        for _ in tracked(writer.map(lambda pair: aggregate_series(store, *pair, profile, known or {}),
                                    touched), "aggregate: series", len(touched)):
            pass
        done = tracked(writer.map(lambda study: aggregate_study(store, study), studies),
                       "aggregate: studies", len(studies), unit="studies")
        study_lines = aggregate_roots(store, ((study, *result) for study, result
                                              in zip(studies, done, strict=True)), writer=writer)
        if report is not None:
            store.put(keys.conversion_report(), [encode(report)])
        write_manifest(store, profile, study_lines)


def series_instances(store: Store, study: str, series: str,
                     known: Known) -> list[tuple[bytes, JsonDict]]:
    """(metadata JSON, instance row) of every complete instance of a series, in instance order."""
    entries = []
    for sop in store.children(f"studies/{study}/series/{series}/instances/"):
        entry = known.get(sop)
        # ``known`` is by SOP Instance UID: a site written before identity records may hold
        # one UID in two series, and each series takes only its own instance
        if entry is not None and (first(entry[1], STUDY_UID), first(entry[1], SERIES_UID)) \
                == (study, series):
            entries.append(entry)
            continue
        try:
            body = store.get(keys.instance_metadata(study, series, sop).key)
        except KeyNotFoundError:
            log.debug("instance %s of series %s is incomplete; left for its writer", sop, series)
            continue
        text = gzip.decompress(body)[1:-1]
        entries.append((text, instance_row(json.loads(text))))
    return sorted(entries, key=lambda entry: sort_key_instance(entry[1]))


def aggregate_series(store: Store, study: str, series: str, profile: Profile,
                     known: Known | None = None) -> None:
    """Write a series' metadata, instance index, Part 10 retrieve, thumbnail and record."""
    entries = series_instances(store, study, series, known or {})
    if not entries:
        return
    rows = [row for _, row in entries]
    if profile.series_p10:
        _write_series_p10(store, study, series, [first(r, "00080018") for r in rows])
    imaged = [text for text, row in entries if first(row, "00280008")]
    if imaged:
        _write_thumbnail(store, study, series, json.loads(imaged[len(imaged) // 2]))
    store.put(keys.series_metadata(study, series),
              [gzip_bytes(b"[" + b",".join(text for text, _ in entries) + b"]")])
    _put_json(store, keys.series_instances(study, series), rows)
    _put_json(store, keys.series_record(study, series),
              {"row": series_row(rows[0], len(rows)), "instances": rows})


def _write_series_p10(store: Store, study: str, series: str, sops: Sequence[str]) -> None:
    spec = keys.series(study, series)
    boundary = keys.boundary_for(spec.key)
    pieces: list[bytes | Slice] = []
    for index, sop in enumerate(sops):
        key = keys.instance(study, series, sop).key
        head, tail = multipart.p10_part_span(key)
        pieces += [multipart.part_head(boundary, "application/dicom", first=index == 0),
                   Slice(key, head, tail)]
    pieces.append(multipart.closing(boundary))
    store.put(spec, pieces)


def _write_thumbnail(store: Store, study: str, series: str, meta: JsonDict) -> None:
    key = keys.frame_key(study, series, first(meta, "00080018"), 1)
    headers = store.headers(key)
    if headers is None:
        return
    try:
        (_part_headers, payload), *_ = multipart.split(store.get(key), headers["Content-Type"])
        syntax = str(first(meta, "00020010"))
        native = SYNTAXES[syntax].native if syntax in SYNTAXES else True
        frame_ts = "1.2.840.10008.1.2.1" if native else syntax
        picture = render(meta, decode_frame(meta, payload, frame_ts, native))
    except (ValueError, RuntimeError, NotImplementedError, KeyError, AttributeError,
            TypeError) as exc:
        log.warning("no thumbnail for series %s: %s", series, exc)
        return
    store.put(keys.series_thumbnail(study, series), [picture])


def _concat_json_arrays(bodies: Sequence[bytes]) -> bytes:
    inner = [gzip.decompress(b)[1:-1] for b in bodies]
    return b"[" + b",".join(i for i in inner if i) + b"]"


def aggregate_study(store: Store, study: str) -> tuple[JsonDict, list[JsonDict]]:
    """Write a study's series and instance indexes, metadata and thumbnail.

    Returns
    -------
    tuple
        The study's row of ``studies`` and its rows of ``series``.

    """
    records = []
    for name in store.children(f"{keys.SITE_PREFIX}series/{study}/"):
        if name.endswith(".json"):
            series = name[: -len(".json")]
            records.append(_get_json(store, keys.series_record(study, series).key))
    records.sort(key=lambda r: sort_key_series(r["row"]))  # type: ignore[index]
    series_rows = [r["row"] for r in records]  # type: ignore[index]
    _put_json(store, keys.study_series(study), series_rows)
    _put_json(store, keys.study_instances(study), [i for r in records for i in r["instances"]])  # type: ignore[index]
    bodies = [store.get(keys.series_metadata(study, first(r, SERIES_UID)).key) for r in series_rows]
    store.put(keys.study_metadata(study), [gzip_bytes(_concat_json_arrays(bodies))])
    for row in series_rows:
        thumb = keys.series_thumbnail(study, first(row, SERIES_UID))
        if store.headers(thumb.key) is not None:
            store.put(keys.study_thumbnail(study), [Slice(thumb.key)])
            break
    return study_row(series_rows), series_rows


def _load_rows(store: Store, key: str) -> list[JsonDict]:
    if store.headers(key) is None:
        return []
    rows = _get_json(store, key)
    return cast(list[JsonDict], rows)


def _line(sort_key: str, counts: str, row: JsonDict) -> bytes:
    return f"{sort_key}\t{counts}\t".encode() + encode(row)


def _hex(value: object) -> str:
    return str(value or "").encode("utf-8").hex() or "-"


def _study_line(row: JsonDict) -> bytes:
    modalities = ",".join(_hex(m) for m in row.get("00080061", {}).get("Value", [])) or "-"
    return _line(first(row, STUDY_UID), f"{first(row, '00201206', 0)} {first(row, '00201208', 0)} "
                                        f"{_hex(first(row, '00100020'))} {modalities}", row)


def _series_line(row: JsonDict) -> bytes:
    number, uid = sort_key_series(row)
    return _line(f"{first(row, STUDY_UID)} {number:010d} {uid}",
                 f"{_hex(first(row, '00100020'))} {_hex(first(row, '00080060'))}", row)


def _root_lines(store: Store, name: str) -> list[bytes]:
    """The lines of a root index's record; made once from the index itself if missing."""
    record = keys.root_record(name)
    if store.headers(record.key) is not None:
        return gzip.decompress(store.get(record.key)).split(b"\n")
    to_line = _study_line if name == "studies" else _series_line
    return [to_line(row) for row in _load_rows(store, name)]


def _study_of(line: bytes) -> bytes:
    return line.split(b"\t", 1)[0].split(b" ", 1)[0]


def _merge_root(store: Store, name: str, drop: set[bytes],
                new: list[bytes]) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """Replace the rows of the ``drop`` studies by ``new`` lines (nothing is written).

    Returns the merged lines, the dropped (old) ones and all the old ones.
    """
    before = [line for line in _root_lines(store, name) if line]
    lines: list[bytes] = []
    dropped: list[bytes] = []
    for line in before:
        (dropped if _study_of(line) in drop else lines).append(line)
    lines += new
    lines.sort()
    return lines, dropped, before


def _rows_json(lines: Sequence[bytes]) -> bytes:
    return b"[" + b",".join(line.split(b"\t", 2)[2] for line in lines) + b"]"


_EMPTY_GZ = gzip_bytes(b"[]")


def _page_offsets(count: int) -> set[int]:
    """Where the pages of an answer of ``count`` rows start: 100, 200, … and the empty end page.

    Below 100 the router sends every offset to the shared ``routing.EMPTY_KEY``,
    so an answer of fewer than 100 rows has no page of its own.
    """
    size = routing.PAGE_SIZE
    return {*range(size, count, size), count} if count >= size else set()


def _rows_meta(headers: Mapping[str, str] | None) -> int:
    """The row count an answer recorded; answers of fewer than a page's rows record none."""
    return int((headers or {}).get(ROWS_META, "0") or 0)


def _rows_record(count: int) -> dict[str, str] | None:
    """User metadata recording an answer's row count, where it has pages to find when it changes.

    Answers below :data:`routing.PAGE_SIZE` rows have no pages, so their count is
    never needed: recording none spares a folder site a ``.meta`` file for each of
    them (the one-row answers by UID are most of a site's answers).
    """
    return {"rows": str(count)} if count >= routing.PAGE_SIZE else None


@dataclass(frozen=True)
class _Answer:
    """A query answer to write: the object that is the whole answer and the base of its pages.

    ``before`` is how many rows it held (None: read from the answer's
    ``x-amz-meta-rows``), so the pages of the old count that the new count
    lacks are deleted without listing.
    """

    key: str | None  # None: another object is the whole answer (``studies/{S}/series``)
    pages: str | None  # None: one row at most, every later offset is routing.EMPTY_KEY
    before: int | None = None
    spec: keys.ObjectSpec | None = None  # the whole answer's headers, when not a _q/ object


def _query_spec(key: str) -> keys.ObjectSpec:
    return keys.ObjectSpec(key, keys.DICOM_JSON, keys.GZIP, keys.INDEX)


def _page_body(lines: Sequence[bytes], start: int) -> bytes:
    if start >= len(lines):
        return _EMPTY_GZ
    return gzip_bytes(_rows_json(lines[start:start + routing.PAGE_SIZE]))


@dataclass(frozen=True)
class _Group:
    """Answers with the same rows, written from one body (each page made once).

    In a CT-only collection ``series?Modality=CT`` is the root ``series`` row
    for row.  ``old`` is what the rows were when the answers were last
    written, if known: a page whose rows did not change is not written again.
    """

    lines: Sequence[bytes]
    answers: list[_Answer]
    old: Sequence[bytes] | None = None


def _plan_pages(store: Store, answer: _Answer, pages: str, group: _Group, wanted: set[int],
                writes: dict[int, list[str]]) -> None:
    """Delete an answer's stale pages; add ``pages`` to ``writes`` under each offset to rewrite."""
    lines, old, size = group.lines, group.old, routing.PAGE_SIZE
    before = answer.before
    if before is None:
        before = _rows_meta(store.headers(answer.key)) if answer.key else 0
    had = _page_offsets(before)
    for stale in sorted(had - wanted):
        store.delete(routing.page_key(pages, stale))
    # the answer was last written from ``old`` (a site only grows, so a page whose rows
    # are unchanged since then was not rewritten differently by an interrupted run)
    same_source = old is not None and before == len(old)
    for start in writes:
        if (same_source and start in had and old is not None
                and old[start:start + size] == lines[start:start + size]):
            continue  # the page holds these rows already
        writes[start].append(pages)


def _store_pages(store: Store, groups: Sequence[_Group]) -> None:
    """The pages of each group's answers, stale pages of their old count deleted."""
    for group in groups:
        lines = group.lines
        wanted = _page_offsets(len(lines))
        writes: dict[int, list[str]] = {start: [] for start in sorted(wanted)}
        for answer in group.answers:
            if answer.pages is not None:
                _plan_pages(store, answer, answer.pages, group, wanted, writes)
        for start, bases in writes.items():
            if bases:
                data = _page_body(lines, start)
                for base in bases:
                    store.put(_query_spec(routing.page_key(base, start)), [data])


def _store_wholes(store: Store, groups: Sequence[_Group]) -> None:
    """Each group's whole answers (made once), with their row count."""
    for group in groups:
        keyed = [(a, a.key) for a in group.answers if a.key is not None]
        if keyed:
            meta = _rows_record(len(group.lines))
            data = gzip_bytes(_rows_json(group.lines))
            for answer, key in keyed:
                store.put(answer.spec or _query_spec(key), [data], meta=meta)


def _chunks(items: Sequence[_T], weight: Callable[[_T], int]) -> Iterator[list[_T]]:
    """Consecutive runs of ``items`` of about :data:`_BATCH` objects each (one task each)."""
    chunk: list[_T] = []
    total = 0
    for item in items:
        chunk.append(item)
        total += weight(item)
        if total >= _BATCH:
            yield chunk
            chunk, total = [], 0
    if chunk:
        yield chunk


def _store_one_row_answers(store: Store, answers: Sequence[tuple[str, bytes]]) -> None:
    """Answers by UID: one row each, no pages (every later offset is ``routing.EMPTY_KEY``)."""
    for key, line in answers:
        store.put(_query_spec(key), [gzip_bytes(_rows_json([line]))])


@dataclass
class _Plan:
    """The query answers one merge rewrites: by UID (one row, no pages), and the others."""

    one_row: list[tuple[str, bytes]]
    groups: list[_Group]

    def count(self) -> int:
        return len(self.one_row) + sum(1 for g in self.groups for a in g.answers
                                       if a.key is not None)

    def submit_first_wave(self, store: Store, writer: Writer) -> None:
        """The answers by UID, and every page (stale ones deleted) before the answers counting them."""
        for start in range(0, len(self.one_row), _BATCH):
            writer.submit(_store_one_row_answers, store, self.one_row[start:start + _BATCH])
        paged = [g for g in self.groups if _may_have_pages(g)]
        _submit_groups(store, writer, _store_pages, paged,
                       lambda g: len(_page_offsets(len(g.lines))) * len(g.answers) + 1)

    def submit_second_wave(self, store: Store, writer: Writer) -> None:
        """The whole answers (after the first wave is stored)."""
        _submit_groups(store, writer, _store_wholes, self.groups, lambda g: len(g.answers))


def _submit_groups(store: Store, writer: Writer,
                   fn: Callable[[Store, Sequence[_Group]], None], groups: Sequence[_Group],
                   weight: Callable[[_Group], int]) -> None:
    """``fn`` over ``groups``: the small ones in chunks, then each large one apart.

    Small groups go in chunks of about :data:`_BATCH` objects.  A large one
    (from :data:`LARGE_GROUP` rows, the roots at scale) goes by
    :meth:`Writer.submit_large`: copying its rows to a writer process costs
    more than writing it here.
    """
    small: list[_Group] = []
    large: list[_Group] = []
    for group in groups:
        (large if len(group.lines) + len(group.old or ()) >= LARGE_GROUP else small).append(group)
    for chunk in _chunks(small, weight):
        writer.submit(fn, store, chunk)
    for group in large:
        writer.submit_large(fn, store, [group])


def _may_have_pages(group: _Group) -> bool:
    """Whether an answer has or had pages (its old count is read in the writer when unknown)."""
    return any(a.pages is not None and (len(group.lines) >= routing.PAGE_SIZE or a.before is None
                                        or a.before >= routing.PAGE_SIZE) for a in group.answers)


def _fields(line: bytes) -> list[str]:
    """A root line's query fields: a study's counts, patient, modalities; a series' patient, modality."""
    return line.split(b"\t", 2)[1].decode().split(" ")


def _values_to_rewrite(store: Store, lines: Iterable[bytes],
                       unchanged: set[bytes]) -> tuple[set[str], set[str]]:
    """The patients and modalities whose answers the changed ``lines`` change."""
    patients: set[str] = set()
    modalities: set[str] = set()
    for line in lines:
        if line in unchanged or line.count(b"\t") < 2:
            continue
        f = _fields(line)
        if len(f) == 4:  # a study line: counts, patient, modalities
            patients.add(f[2])
            modalities.update(f[3].split(","))
        elif len(f) == 2:  # a series line: patient, modality
            patients.add(f[0])
            modalities.add(f[1])
    for always in ALWAYS_ANSWERED_MODALITIES:  # S3 has no "empty answer": write [] once
        code = _hex(always)
        if store.headers(f"{routing.QUERY_PREFIX}series/Modality/{code}") is None:
            modalities.add(code)
    patients.discard("-")
    modalities.discard("-")
    return patients, modalities


def _is_series_line(line: bytes) -> bool:
    return line.count(b"\t") >= 2 and len(_fields(line)) == 2


def _series_by_study(series: Iterable[bytes], studies: set[str] | None = None) -> dict[str, list[bytes]]:
    """Series lines by their study's UID (only those of ``studies`` when given)."""
    by_study: dict[str, list[bytes]] = {}
    for line in series:
        study = _study_of(line).decode()
        if studies is None or study in studies:
            by_study.setdefault(study, []).append(line)
    return by_study


def _one_row_answers(studies: Sequence[bytes], by_study: Mapping[str, list[bytes]],
                     touched_studies: set[str], unchanged: set[bytes]) -> list[tuple[str, bytes]]:
    """The answers by Study and Series Instance UID whose row changed."""
    # UIDs in root lines were validated when their series were converted
    by_study_uid = routing.answer_template("studies", "StudyInstanceUID")
    by_series_uid = routing.answer_template("series", "SeriesInstanceUID")
    one_row: list[tuple[str, bytes]] = []
    for line in studies:
        study = _study_of(line).decode()
        if study not in touched_studies:
            continue
        if line not in unchanged:
            one_row.append((by_study_uid.replace(routing.VALUE, study), line))
        for series_line in by_study.get(study, []):
            if series_line not in unchanged:
                uid = series_line.split(b"\t", 1)[0].split(b" ")[2].decode()
                one_row.append((by_series_uid.replace(routing.VALUE, uid), series_line))
    return one_row


def _study_series_pages(by_study: Mapping[str, list[bytes]],
                        old_series_of: Mapping[str, list[bytes]]) -> list[_Group]:
    """The pages of ``series?StudyInstanceUID=S`` that changed.

    That answer is ``studies/{S}/series`` itself: only its pages (100 series or more) are
    under ``_q/``.
    """
    groups: list[_Group] = []
    for study, lines in by_study.items():
        old_lines = old_series_of.get(study, [])
        if lines != old_lines and max(len(lines), len(old_lines)) >= routing.PAGE_SIZE:
            pages = routing.pages_base("series", "StudyInstanceUID", study)
            groups.append(_Group(lines, [_Answer(None, pages, before=len(old_lines))]))
    return groups


def _bucket_rows(studies: Sequence[bytes], series: Sequence[bytes], patients: set[str],
                 modalities: set[str]) -> dict[str, list[bytes]]:
    """One pass over the roots, bucketing only the patients' and modalities' rows to rewrite."""
    buckets: dict[str, list[bytes]] = {}
    for line in studies:
        f = _fields(line)
        if f[2] in patients:
            buckets.setdefault(f"studies/PatientID/{f[2]}", []).append(line)
        for modality in f[3].split(","):
            if modality in modalities:
                buckets.setdefault(f"studies/ModalitiesInStudy/{modality}", []).append(line)
    for line in series:
        f = _fields(line)
        if f[0] in patients:
            buckets.setdefault(f"series/PatientID/{f[0]}", []).append(line)
        if f[1] in modalities:
            buckets.setdefault(f"series/Modality/{f[1]}", []).append(line)
    return buckets


def _plan_answers(store: Store, studies: Sequence[bytes], series: Sequence[bytes],
                  touched: Sequence[bytes], old: Sequence[bytes],
                  roots: Mapping[str, _Group] | None) -> _Plan:
    touched_studies = {_study_of(line).decode() for line in touched}
    unchanged = set(old) & set(touched)  # rows that came back byte for byte: their answers stand
    patients, modalities = _values_to_rewrite(store, (*touched, *old), unchanged)
    by_study = _series_by_study(series, touched_studies)
    one_row = _one_row_answers(studies, by_study, touched_studies, unchanged)
    groups = _study_series_pages(by_study, _series_by_study(filter(_is_series_line, old)))
    shared = {name: _Group(g.lines, list(g.answers), g.old) for name, g in (roots or {}).items()}
    buckets = _bucket_rows(studies, series, patients, modalities)
    names = [f"{level}/PatientID/{p}" for p in sorted(patients) for level in ("studies", "series")]
    names += [f"studies/ModalitiesInStudy/{m}" for m in sorted(modalities)]
    names += [f"series/Modality/{m}" for m in sorted(modalities)]
    for name in names:
        key = f"{routing.QUERY_PREFIX}{name}"
        answer = _Answer(key, key)
        rows = buckets.get(name, [])
        level = name.split("/", 1)[0]
        if level in shared and len(rows) == len(shared[level].lines):
            shared[level].answers.append(answer)  # every root row: written from the root's bodies
        else:
            groups.append(_Group(rows, [answer]))
    return _Plan(one_row, [*shared.values(), *groups])


def _put_empty_page(store: Store) -> None:
    """The shared empty page, before any answer whose later offsets route to it."""
    if store.headers(routing.EMPTY_KEY) is None:
        store.put(_query_spec(routing.EMPTY_KEY), [_EMPTY_GZ])


def aggregate_roots(store: Store,
                    updated: Iterable[tuple[str, JsonDict, Sequence[JsonDict]]],
                    writer: Writer | None = None) -> list[bytes]:
    """Merge updated studies (UID, study row, series rows) into the root ``series`` and ``studies``.

    ``updated`` is consumed once and may be a generator.  Only the updated
    studies' rows are encoded; the others are carried over as bytes from the
    root records.  The query answers and the root indexes are written (on
    ``writer``'s threads) before the root records, which are what the next
    merge starts from: an interrupted run is redone whole by its rerun.
    Returns the lines of ``studies``.
    """
    with contextlib.ExitStack() as stack:
        if writer is None:
            writer = stack.enter_context(Writer(store))
        drop: set[bytes] = set()
        series_lines: list[bytes] = []
        study_lines: list[bytes] = []
        for study, row, rows in updated:
            drop.add(study.encode())
            study_lines.append(_study_line(row))
            series_lines.extend(_series_line(r) for r in rows)
        all_series, old_series, were_series = _merge_root(store, "series", drop, series_lines)
        all_studies, old_studies, were_studies = _merge_root(store, "studies", drop, study_lines)
        roots: dict[str, _Group] = {}
        for name, lines, were in (("studies", all_studies, were_studies),
                                  ("series", all_series, were_series)):
            spec = keys.studies() if name == "studies" else keys.all_series()
            before = _rows_meta(store.headers(spec.key))
            roots[name] = _Group(lines, [_Answer(spec.key, routing.all_key(name), before, spec)],
                                 old=were)
        _put_empty_page(store)
        plan = _plan_answers(store, all_studies, all_series, study_lines + series_lines,
                             old_studies + old_series, roots)
        plan.submit_first_wave(store, writer)
        records = {name: gzip_bytes(b"\n".join(lines))  # meanwhile, in this thread
                   for name, lines in (("series", all_series), ("studies", all_studies))}
        # pages are stored before the answers counting them, and what the updates wrote (the
        # study indexes) before the root indexes naming it
        writer.wait()
        plan.submit_second_wave(store, writer)
        writer.wait()
        for name, data in records.items():  # last: the state the next merge starts from
            store.put(keys.root_record(name), [data])
    log.info("merged %d studies into %d studies and %d series; %d query answers written",
             len(drop), len(all_studies), len(all_series), plan.count())
    return all_studies


def write_manifest(store: Store, profile: Profile, study_lines: Sequence[bytes]) -> JsonDict:
    """Write the manifest (counts and index checksums), last of all objects."""
    counts = [line.split(b"\t", 2)[1].split() for line in study_lines]
    indexes = {key: hashlib.sha256(store.get(key)).hexdigest() for key in ("studies", "series")
               if store.headers(key) is not None}
    manifest: JsonDict = {
        "generator": {"name": "static-dicomweb", "version": __version__},
        "layout": LAYOUT_VERSION,
        "profile": profile.name,
        "counts": {"studies": len(study_lines),
                   "series": sum(int(c[0]) for c in counts),
                   "instances": sum(int(c[1]) for c in counts)},
        "indexes_sha256": indexes,
    }
    store.put(keys.manifest(), [encode(manifest)])
    return manifest
