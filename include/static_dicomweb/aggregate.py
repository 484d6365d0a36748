"""Index aggregation: series, study and root indexes from the instances in a site.

Incremental: a touched series rebuilds its own indexes from its instances'
metadata, then its study's indexes from the study's series records, then the
root ``studies`` and ``series`` are merged row by row.  Nothing else is read
or written.  Everything runs under the store's lock, and every index is
written after the objects it names, the manifest last.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import cast

from . import __version__, keys, multipart, routing
from .dicomjson import JsonDict, decode, encode, first, gzip_bytes
from .errors import KeyNotFoundError
from .profiles import Profile
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
from .store import Slice, Store
from .thumbnail import decode_frame, render

log = logging.getLogger(__name__)
LAYOUT_VERSION = "1"
#: Modalities whose query answers exist even when empty: MONAI Label asks ``series?Modality=SEG``
#: (and its search filter, CT by default) on every site, and S3 answers a missing key with 403/404.
ALWAYS_ANSWERED_MODALITIES = ("CT", "SEG")
#: The header recording how many rows a query answer holds (``x-amz-meta-rows`` on S3).
ROWS_META = "x-amz-meta-rows"


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
    with store.lock():
        studies = sorted({study for study, _ in touched})
        for study, series in touched:
            aggregate_series(store, study, series, profile, known or {})
        study_lines = aggregate_roots(store, ((study, *aggregate_study(store, study))
                                              for study in studies))
        if report is not None:
            store.put(keys.conversion_report(), [encode(report)])
        write_manifest(store, profile, study_lines)


def series_instances(store: Store, study: str, series: str,
                     known: Known) -> list[tuple[bytes, JsonDict]]:
    """(metadata JSON, instance row) of every complete instance of a series, in instance order."""
    entries = []
    for sop in store.children(f"studies/{study}/series/{series}/instances/"):
        if sop in known:
            entries.append(known[sop])
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
                new: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Replace the rows of the ``drop`` studies by ``new`` lines; write the index and its record.

    Returns the merged lines and the dropped (old) ones.
    """
    lines: list[bytes] = []
    dropped: list[bytes] = []
    for line in _root_lines(store, name):
        if line:
            (dropped if _study_of(line) in drop else lines).append(line)
    lines += new
    lines.sort()
    spec = keys.studies() if name == "studies" else keys.all_series()
    store.put(keys.root_record(name), [gzip_bytes(b"\n".join(lines))])
    _write_pages(store, routing.all_key(name), lines, counted=spec.key)
    store.put(spec, [gzip_bytes(_rows_json(lines))], meta={"rows": str(len(lines))})
    return lines, dropped


def _rows_json(lines: Sequence[bytes]) -> bytes:
    return b"[" + b",".join(line.split(b"\t", 2)[2] for line in lines) + b"]"


def _write_pages(store: Store, base: str, lines: Sequence[bytes], counted: str | None = None) -> None:
    """Pages of ``routing.PAGE_SIZE`` rows at ``base.offset.N`` (N > 0), an empty one at the end.

    Offset 0 is the answer itself (``counted``: the object that stands for it),
    whose ``x-amz-meta-rows`` says how many rows it had, so pages of an earlier
    count are deleted without listing anything.
    """
    size = routing.PAGE_SIZE
    offsets = {*range(size, len(lines), size), len(lines)}
    held = store.headers(counted or base) or {}
    before = int(held.get(ROWS_META, "0") or 0)
    for stale in {*range(size, before, size), before} - offsets - {0}:  # pages of the old count
        store.delete(routing.page_key(base, stale))
    for start in range(size, len(lines), size):
        store.put(_query_spec(routing.page_key(base, start)),
                  [gzip_bytes(_rows_json(lines[start:start + size]))])
    if lines:
        store.put(_query_spec(routing.page_key(base, len(lines))), [gzip_bytes(b"[]")])


def _query_spec(key: str) -> keys.ObjectSpec:
    return keys.ObjectSpec(key, keys.DICOM_JSON, keys.GZIP, keys.INDEX)


def _write_answer(store: Store, key: str, lines: Sequence[bytes]) -> None:
    """A precomputed query answer, its pages and end page (the pages first)."""
    _write_pages(store, key, lines)
    store.put(_query_spec(key), [gzip_bytes(_rows_json(lines))], meta={"rows": str(len(lines))})


def write_query_answers(store: Store, studies: Sequence[bytes], series: Sequence[bytes],
                        touched: Sequence[bytes], old: Sequence[bytes]) -> int:
    """Rewrite the query answers that the touched (and replaced) root lines change.

    Answers by UID are per touched study and series; answers by patient and by
    modality are rebuilt for every patient and modality the touched rows name.
    Returns the number of answers written.
    """
    def fields(line: bytes) -> list[str]:
        return line.split(b"\t", 2)[1].decode().split(" ")

    touched_studies = {_study_of(line).decode() for line in touched}
    unchanged = set(old)  # rows that came back byte for byte: their answers stand
    patients: set[str] = set()
    modalities: set[str] = set()
    for line in (*touched, *old):
        if line.count(b"\t") < 2:
            continue
        f = fields(line)
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
    written = 0
    by_study: dict[str, list[bytes]] = {}
    for line in series:
        study = _study_of(line).decode()
        if study in touched_studies:
            by_study.setdefault(study, []).append(line)
    for line in studies:
        study = _study_of(line).decode()
        if study in touched_studies:
            _write_answer(store, f"{routing.QUERY_PREFIX}studies/StudyInstanceUID/{study}", [line])
            _write_answer(store, f"{routing.QUERY_PREFIX}series/StudyInstanceUID/{study}",
                          by_study.get(study, []))
            written += 2
            for series_line in by_study.get(study, []):
                if series_line in unchanged:
                    continue
                uid = series_line.split(b"\t", 1)[0].split(b" ")[2].decode()
                _write_answer(store, f"{routing.QUERY_PREFIX}series/SeriesInstanceUID/{uid}",
                              [series_line])
                written += 1
    patients.discard("-")
    modalities.discard("-")
    # one pass over the roots, bucketing only the patients and modalities to rewrite
    buckets: dict[str, list[bytes]] = {}
    for line in studies:
        f = fields(line)
        if f[2] in patients:
            buckets.setdefault(f"studies/PatientID/{f[2]}", []).append(line)
        for modality in f[3].split(","):
            if modality in modalities:
                buckets.setdefault(f"studies/ModalitiesInStudy/{modality}", []).append(line)
    for line in series:
        f = fields(line)
        if f[0] in patients:
            buckets.setdefault(f"series/PatientID/{f[0]}", []).append(line)
        if f[1] in modalities:
            buckets.setdefault(f"series/Modality/{f[1]}", []).append(line)
    answers = [f"{level}/PatientID/{p}" for p in sorted(patients) for level in ("studies", "series")]
    answers += [f"studies/ModalitiesInStudy/{m}" for m in sorted(modalities)]
    answers += [f"series/Modality/{m}" for m in sorted(modalities)]
    for answer in answers:
        _write_answer(store, f"{routing.QUERY_PREFIX}{answer}", buckets.get(answer, []))
    return written + len(answers)


def aggregate_roots(store: Store,
                    updated: Iterable[tuple[str, JsonDict, Sequence[JsonDict]]]) -> list[bytes]:
    """Merge updated studies (UID, study row, series rows) into the root ``series`` and ``studies``.

    ``updated`` is consumed once and may be a generator.  Only the updated
    studies' rows are encoded; the others are carried over as bytes from the
    root records.  Returns the lines of ``studies``.
    """
    drop: set[bytes] = set()
    series_lines: list[bytes] = []
    study_lines: list[bytes] = []
    for study, row, rows in updated:
        drop.add(study.encode())
        study_lines.append(_study_line(row))
        series_lines.extend(_series_line(r) for r in rows)
    all_series, old_series = _merge_root(store, "series", drop, series_lines)
    all_studies, old_studies = _merge_root(store, "studies", drop, study_lines)
    write_query_answers(store, all_studies, all_series, study_lines + series_lines,
                        old_studies + old_series)
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
