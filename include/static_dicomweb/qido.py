"""QIDO-RS rows: the attributes PS3.18 (Tables 10.6.3-3 to -5) requires per level.

Rows are built from an instance's DICOM JSON metadata.  Attributes that are
required but absent in the source are present and empty (``{"vr": "PN"}``),
as Type 2 attributes are.  Every RetrieveURL is relative to the site root.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from . import routing
from .dicomjson import JsonDict, decode, first
from .errors import KeyNotFoundError

if TYPE_CHECKING:
    from .store import Store

CHARSET = "00080005"
TIMEZONE = "00080201"
#: (tag, VR, required) at the study level.
STUDY_ATTRS: tuple[tuple[str, str, bool], ...] = (
    (CHARSET, "CS", False), ("00080020", "DA", True), ("00080030", "TM", True),
    ("00080050", "SH", True), ("00080090", "PN", True), (TIMEZONE, "SH", False),
    ("00081030", "LO", False), ("00100010", "PN", True), ("00100020", "LO", True),
    ("00100030", "DA", True), ("00100040", "CS", True), ("0020000D", "UI", True),
    ("00200010", "SH", True),
)
SERIES_ATTRS: tuple[tuple[str, str, bool], ...] = (
    ("00080060", "CS", True), ("0008103E", "LO", False), ("0020000E", "UI", True),
    ("00200011", "IS", True), ("00400244", "DA", False), ("00400245", "TM", False),
    ("00400275", "SQ", False), ("00180015", "CS", False),
)
INSTANCE_ATTRS: tuple[tuple[str, str, bool], ...] = (
    ("00080016", "UI", True), ("00080018", "UI", True), ("00080008", "CS", False),
    ("00200013", "IS", True), ("00280010", "US", True), ("00280011", "US", True),
    ("00280100", "US", True),
)
STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"
MODALITY, SERIES_NUMBER, INSTANCE_NUMBER = "00080060", "00200011", "00200013"
NUMBER_OF_FRAMES = "00280008"
ONLINE = {"vr": "CS", "Value": ["ONLINE"]}


def _pick(meta: JsonDict, attrs: Iterable[tuple[str, str, bool]], out: JsonDict) -> None:
    for tag, vr, required in attrs:
        if tag in meta:
            out[tag] = meta[tag]
        elif required:
            out[tag] = {"vr": vr}


def _url(path: str) -> JsonDict:
    return {"vr": "UR", "Value": [path]}


def _count(n: int) -> JsonDict:
    return {"vr": "IS", "Value": [n]}


def study_attrs(meta: JsonDict) -> JsonDict:
    """The study-level attributes of an instance (patient and study modules)."""
    out: JsonDict = {}
    _pick(meta, STUDY_ATTRS, out)
    return out


def instance_row(meta: JsonDict) -> JsonDict:
    """A row of ``studies/{S}/series/{SE}/instances`` (and ``studies/{S}/instances``)."""
    study, series, sop = (first(meta, t) for t in (STUDY_UID, SERIES_UID, SOP_UID))
    out = study_attrs(meta)
    _pick(meta, SERIES_ATTRS, out)
    _pick(meta, INSTANCE_ATTRS, out)
    out["00080056"] = ONLINE
    out["00081190"] = _url(f"studies/{study}/series/{series}/instances/{sop}")
    frames = first(meta, NUMBER_OF_FRAMES)
    has_pixels = any(t in meta for t in ("7FE00010", "7FE00008", "7FE00009"))
    out[NUMBER_OF_FRAMES] = _count(int(frames) if frames else (1 if has_pixels else 0))
    if "00280010" not in meta:
        for tag in ("00280010", "00280011", "00280100"):
            out[tag] = {"vr": "US"}
    return out


def series_row(meta: JsonDict, count: int) -> JsonDict:
    """A row of ``studies/{S}/series`` and of the root ``series``.

    Parameters
    ----------
    meta
        The metadata (or the instance row) of the series' first instance.
    count
        The number of instances in the series.
    """
    study, series = first(meta, STUDY_UID), first(meta, SERIES_UID)
    out = study_attrs(meta)
    _pick(meta, SERIES_ATTRS, out)
    out["00080056"] = ONLINE
    out["00081190"] = _url(f"studies/{study}/series/{series}")
    out["00201209"] = _count(count)
    return out


def study_row(series_rows: Sequence[JsonDict]) -> JsonDict:
    """A row of ``studies``, from the rows of the study's series."""
    out: JsonDict = {}
    _pick(series_rows[0], STUDY_ATTRS, out)
    study = first(out, STUDY_UID)
    modalities = sorted({first(r, MODALITY) for r in series_rows if first(r, MODALITY)})
    out["00080056"] = ONLINE
    out["00080061"] = {"vr": "CS", "Value": modalities} if modalities else {"vr": "CS"}
    out["00081190"] = _url(f"studies/{study}")
    out["00201206"] = _count(len(series_rows))
    out["00201208"] = _count(sum(first(r, "00201209", 0) for r in series_rows))
    return out


def sort_key_instance(meta: JsonDict) -> tuple[int, str]:
    """Instances in InstanceNumber order, then by SOP Instance UID."""
    number = first(meta, INSTANCE_NUMBER)
    return (int(number) if isinstance(number, (int, float)) else 2**31, first(meta, SOP_UID, ""))


def sort_key_series(row: JsonDict) -> tuple[int, str]:
    """Series in SeriesNumber order, then by Series Instance UID."""
    number = first(row, SERIES_NUMBER)
    return (int(number) if isinstance(number, (int, float)) else 2**31, first(row, SERIES_UID, ""))


def stored_answer(store: Store, resource: str, query: Mapping[str, Sequence[str]]) -> list[JsonDict]:
    """The rows a site answers to a QIDO query (its precomputed answer, as ``serve`` routes it).

    Parameters
    ----------
    store : Store
        The site.
    resource : str
        ``studies`` or ``series``.
    query : mapping of str to list of str
        The query parameters, parsed (e.g. ``{"Modality": ["CT"]}``).

    Returns
    -------
    list of dict
        The DICOM JSON rows; ``[]`` when the site holds no answer (nothing matches).
    """
    try:
        rows = decode(store.get(routing.route(resource, query)))
    except KeyNotFoundError:
        return []
    return list(rows) if isinstance(rows, list) else []
