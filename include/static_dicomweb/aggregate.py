"""Index aggregation: series, study and root indexes from the instances in a site.

Incremental: a touched series rebuilds its own indexes from its instances'
metadata, then its study's indexes from the study's series records, then the
root ``studies`` and ``series`` are merged row by row.  Nothing else is read
or written.  Everything runs under the store's lock, and every index is
written after the objects it names, the manifest last.

The parts: :mod:`.writer` (the writes, on threads or child processes),
:mod:`.roots` (the root indexes' line records) and :mod:`.answers` (the
precomputed query answers); this module runs them in order.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence

from . import __version__, keys, multipart, routing
from .answers import Answer, Group, plan_answers, put_empty_page, rows_meta
from .dicomjson import JsonDict, encode, first, gzip_bytes
from .errors import KeyNotFoundError
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
from .roots import get_json, merge_root, series_line, study_line
from .store import Slice, Store
from .thumbnail import decode_frame, render
from .writer import Writer

log = logging.getLogger(__name__)


LAYOUT_VERSION = "1"


def _put_json(store: Store, spec: keys.ObjectSpec, obj: object) -> None:
    data = encode(obj)
    store.put(spec, [gzip_bytes(data) if spec.content_encoding == keys.GZIP else data])


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
            records.append(get_json(store, keys.series_record(study, series).key))
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
            study_lines.append(study_line(row))
            series_lines.extend(series_line(r) for r in rows)
        all_series, old_series, were_series = merge_root(store, "series", drop, series_lines)
        all_studies, old_studies, were_studies = merge_root(store, "studies", drop, study_lines)
        roots: dict[str, Group] = {}
        for name, lines, were in (("studies", all_studies, were_studies),
                                  ("series", all_series, were_series)):
            spec = keys.studies() if name == "studies" else keys.all_series()
            before = rows_meta(store.headers(spec.key))
            roots[name] = Group(lines, [Answer(spec.key, routing.all_key(name), before, spec)],
                                old=were)
        put_empty_page(store)
        plan = plan_answers(store, all_studies, all_series, study_lines + series_lines,
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
