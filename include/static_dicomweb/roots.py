"""The root indexes' line records: one line per study or series row, merged as bytes.

The root ``studies`` and ``series`` are merged from their records (``_site/roots/*.jsonl``):
each line holds a sort key, the fields the query answers are bucketed by (a study's counts,
patient and modalities; a series' patient and modality, hex-encoded) and the row's JSON, so
the rows of studies that did not change are carried over without decoding them.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from typing import cast

from . import keys
from .dicomjson import JsonDict, decode, encode, first
from .qido import STUDY_UID, sort_key_series
from .store import Store


def _line(sort_key: str, counts: str, row: JsonDict) -> bytes:
    return f"{sort_key}\t{counts}\t".encode() + encode(row)


def hex_field(value: object) -> str:
    """A value as a line field: its UTF-8 bytes in hex (no spaces or commas), ``-`` when empty."""
    return str(value or "").encode("utf-8").hex() or "-"


def study_line(row: JsonDict) -> bytes:
    """The line of a ``studies`` row: its UID; series and instance counts, patient, modalities."""
    modalities = ",".join(hex_field(m) for m in row.get("00080061", {}).get("Value", [])) or "-"
    return _line(first(row, STUDY_UID), f"{first(row, '00201206', 0)} {first(row, '00201208', 0)} "
                                         f"{hex_field(first(row, '00100020'))} {modalities}", row)


def series_line(row: JsonDict) -> bytes:
    """The line of a ``series`` row: study UID, series number and UID; patient, modality."""
    number, uid = sort_key_series(row)
    return _line(f"{first(row, STUDY_UID)} {number:010d} {uid}",
                 f"{hex_field(first(row, '00100020'))} {hex_field(first(row, '00080060'))}", row)


def get_json(store: Store, key: str) -> object:
    """The JSON object stored at ``key``."""
    return decode(store.get(key))


def _load_rows(store: Store, key: str) -> list[JsonDict]:
    if store.headers(key) is None:
        return []
    rows = get_json(store, key)
    return cast(list[JsonDict], rows)


def root_lines(store: Store, name: str) -> list[bytes]:
    """The lines of a root index's record; made once from the index itself if missing."""
    record = keys.root_record(name)
    if store.headers(record.key) is not None:
        return gzip.decompress(store.get(record.key)).split(b"\n")
    to_line = study_line if name == "studies" else series_line
    return [to_line(row) for row in _load_rows(store, name)]


def study_of(line: bytes) -> bytes:
    """The Study Instance UID a line belongs to."""
    return line.split(b"\t", 1)[0].split(b" ", 1)[0]


def merge_root(store: Store, name: str, drop: set[bytes],
               new: list[bytes]) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """Replace the rows of the ``drop`` studies by ``new`` lines (nothing is written).

    Returns the merged lines, the dropped (old) ones and all the old ones.
    """
    before = [line for line in root_lines(store, name) if line]
    lines: list[bytes] = []
    dropped: list[bytes] = []
    for line in before:
        (dropped if study_of(line) in drop else lines).append(line)
    lines += new
    lines.sort()
    return lines, dropped, before


def rows_json(lines: Sequence[bytes]) -> bytes:
    """The JSON array of the lines' rows, without decoding them."""
    return b"[" + b",".join(line.split(b"\t", 2)[2] for line in lines) + b"]"


def fields(line: bytes) -> list[str]:
    """A root line's query fields: a study's counts, patient, modalities; a series' patient, modality."""
    return line.split(b"\t", 2)[1].decode().split(" ")


def is_series_line(line: bytes) -> bool:
    """Whether a line is a ``series`` line (two fields), not a ``studies`` one."""
    return line.count(b"\t") >= 2 and len(fields(line)) == 2
