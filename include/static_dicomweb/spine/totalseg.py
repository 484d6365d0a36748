"""IDC's TotalSegmentator SEGs of NLST as training labels for a spine model.

NCI Imaging Data Commons holds, as the analysis result ``totalsegmentator_ct_segmentations``
("TotalSegmentator-CT-Segmentations", DOI 10.5281/zenodo.8347011), one DICOM SEG per NLST CT
series: 126,051 SEG series in the v25 index (idc-index-data 25.0.5), one instance of about
110 MB each, made by dcmqi from TotalSegmentator v1.5.6 with up to 104 segments coded in
SNOMED CT (vertebrae C1–L5 by their CID 7603 codes, labels such as ``T5 vertebra``).  Its
SeriesDescription is ``TotalSegmentator(v1.5.6) Segmentation of Series N`` and its
SeriesNumber ``100 × N``, where N is the segmented CT's SeriesNumber in the same study.

The import selects those SEGs for given CT series from the offline index (linked exactly by a
``segmented_SeriesInstanceUID`` column when a segmentation index with it is given, otherwise
by study and series number and then verified against the downloaded SEG's Referenced Series
Sequence), downloads them through :class:`~static_dicomweb.sources.idc.IdcSource`, keeps the
vertebra segments, renumbers them for the model (:func:`map_totalseg`) and converts the new
SEG into the site next to its CT series (:func:`import_totalseg`).
"""

from __future__ import annotations

import datetime
import io
import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import numpy.typing as npt
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite

from static_dicomweb.convert import ConversionResult, convert_files
from static_dicomweb.errors import InvalidUIDError, RejectedInstanceError
from static_dicomweb.keys import validate_uid
from static_dicomweb.pipeline import BatchResult
from static_dicomweb.reader import UNREADABLE
from static_dicomweb.sources import SeriesRef, Source
from static_dicomweb.spine.labels import (
    LEVELS,
    LOCALIZATION_SPINE_LABELS,
    SPINE,
    ModelLabels,
    label_value,
    model_labels,
)
from static_dicomweb.spine.seg import (
    SegmentationError,
    check_references,
    label_volume,
    seg_name,
    segment_levels,
    write_seg,
)
from static_dicomweb.spine.volume import (
    SeriesNotInSiteError,
    SeriesVolume,
    read_series_volume,
    series_volume_from_files,
)
from static_dicomweb.store import Store

log = logging.getLogger(__name__)

ANALYSIS_RESULT_ID = "totalsegmentator_ct_segmentations"
"""IDC's ``analysis_result_id`` of TotalSegmentator-CT-Segmentations."""
SOURCE_DOI = "10.5281/zenodo.8347011"
"""Its ``source_DOI`` in the index."""

#: Every level plus the whole spine: how the import reads a SEG before renumbering it.
_ALL_LEVELS: ModelLabels = {**LOCALIZATION_SPINE_LABELS, SPINE: len(LEVELS) + 1}
_SERIES_OF = re.compile(r"Segmentation of Series\s+(\S+)\s*$")
_VERSION = re.compile(r"v?(\d+(?:\.\d+)+)")


@dataclass(frozen=True)
class TotalSegRef:
    """A TotalSegmentator SEG series at IDC and the CT series it segments."""

    seg: SeriesRef
    ct: SeriesRef
    #: ``segmented_SeriesInstanceUID`` (exact) or ``SeriesNumber`` (checked after download).
    linked_by: str


class ImportedSeg(TypedDict):
    """One SEG the import wrote into the site."""

    ct_series: str
    source_seg: str
    seg_series: str
    seg_instance: str
    vertebrae: list[str]
    file: str


class ImportSummary(BatchResult):
    """What :func:`import_totalseg` did; a :class:`~static_dicomweb.pipeline.BatchResult` too."""

    imported: list[ImportedSeg]
    skipped: list[dict[str, str]]


def is_totalseg(row: Mapping[str, Any]) -> bool:
    """Whether an idc-index row is a TotalSegmentator-CT-Segmentations SEG series."""
    if str(row.get("Modality", "")).upper() != "SEG":
        return False
    analysis = str(row.get("analysis_result_id", "") or "").lower().replace("-", "_")
    doi = str(row.get("source_DOI", "") or "").lower()
    return analysis == ANALYSIS_RESULT_ID or doi == SOURCE_DOI


def _series_number(value: Any) -> int | None:
    try:
        return int(float(str(value).strip()))
    except (TypeError, ValueError):
        return None


def _ref(row: Mapping[str, Any]) -> SeriesRef:
    return SeriesRef(series_uid=str(row["SeriesInstanceUID"]),
                     study_uid=str(row.get("StudyInstanceUID", "")),
                     patient_id=str(row.get("PatientID", "")),
                     modality=str(row.get("Modality", "")),
                     instances=int(row.get("instanceCount") or 0),
                     location=str(row.get("series_aws_url", "")).removesuffix("*"))


def _candidate_rows(index: Any, ct_uids: set[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(CT rows, SEG rows of their studies) from idc-index's DataFrame or from dicts."""
    if hasattr(index, "to_dict"):
        ct = index.loc[index["SeriesInstanceUID"].isin(ct_uids)]
        studies = set(ct["StudyInstanceUID"])
        segs = index.loc[index["StudyInstanceUID"].isin(studies)
                         & (index["Modality"].astype(str).str.upper() == "SEG")]
        ct_rows: list[dict[str, Any]] = ct.to_dict("records")
        seg_rows: list[dict[str, Any]] = segs.to_dict("records")
        return ct_rows, [r for r in seg_rows if is_totalseg(r)]
    rows = [dict(r) for r in index]
    ct_rows = [r for r in rows if str(r.get("SeriesInstanceUID")) in ct_uids]
    studies = {str(r.get("StudyInstanceUID")) for r in ct_rows}
    return ct_rows, [r for r in rows if str(r.get("StudyInstanceUID")) in studies and is_totalseg(r)]


def _segmented(seg_index: Any) -> dict[str, str]:
    if seg_index is None:
        return {}
    rows = seg_index.to_dict("records") if hasattr(seg_index, "to_dict") else list(seg_index)
    return {str(r["SeriesInstanceUID"]): str(r["segmented_SeriesInstanceUID"]) for r in rows
            if r.get("segmented_SeriesInstanceUID") == r.get("segmented_SeriesInstanceUID")
            and r.get("segmented_SeriesInstanceUID")}


def _valid_series_uids(ct_series: Iterable[SeriesRef | str]) -> set[str]:
    """The requested CT Series Instance UIDs that are valid UIDs (the others logged and skipped)."""
    wanted: set[str] = set()
    for item in ct_series:
        try:
            wanted.add(validate_uid(item.series_uid if isinstance(item, SeriesRef) else item,
                                    what="SeriesInstanceUID"))
        except InvalidUIDError as exc:
            log.warning("CT series skipped: %s", exc)
    return wanted


def _link(seg: Mapping[str, Any], ct: Mapping[str, Any], exact: Mapping[str, str]) -> str | None:
    """How an index row of a SEG is linked to a CT series' row, or None when it is not.

    By ``seg_index``'s ``segmented_SeriesInstanceUID`` where it names the SEG, else by
    series number: the SEG's description names the CT's, or its number is 100 times it.
    """
    seg_uid = str(seg["SeriesInstanceUID"])
    if seg_uid in exact:
        return "segmented_SeriesInstanceUID" if exact[seg_uid] == str(ct["SeriesInstanceUID"]) else None
    number = _series_number(ct.get("SeriesNumber"))
    if number is None:
        return None
    match = _SERIES_OF.search(str(seg.get("SeriesDescription", "") or ""))
    by_description = match is not None and _series_number(match[1]) == number
    by_number = _series_number(seg.get("SeriesNumber")) == 100 * number
    return "SeriesNumber" if by_description or by_number else None


def select_totalseg(ct_series: Iterable[SeriesRef | str], *, index: Any = None,
                    seg_index: Any = None) -> list[TotalSegRef]:
    """The TotalSegmentator SEG series of given CT series, from IDC's offline index.

    Parameters
    ----------
    ct_series
        CT series (refs or Series Instance UIDs), e.g. from
        :meth:`IdcSource.list_series <static_dicomweb.sources.idc.IdcSource.list_series>`.
    index
        The series index: idc-index's DataFrame (``IDCClient().index``, offline, the
        default) or dicts with its columns (``SeriesInstanceUID``, ``StudyInstanceUID``,
        ``Modality``, ``SeriesNumber``, ``SeriesDescription``, ``analysis_result_id``,
        ``source_DOI``, ``instanceCount``, ``series_aws_url``).
    seg_index
        Optionally idc-index's ``seg_index`` (``IDCClient.fetch_index("seg_index")``, a
        download) or dicts with ``SeriesInstanceUID`` and ``segmented_SeriesInstanceUID``:
        links each SEG to its CT series exactly.

    Returns
    -------
    list of TotalSegRef
        Sorted by CT then SEG Series Instance UID.  Linked by series number, a study with two
        CT series of one number yields a SEG candidate for each; the import keeps the one
        whose Referenced Series Sequence names the CT series.

    """
    wanted = _valid_series_uids(ct_series)
    if not wanted:
        return []
    if index is None:
        from idc_index import IDCClient  # type: ignore[attr-defined]

        index = IDCClient().index  # type: ignore[no-untyped-call]
    ct_rows, seg_rows = _candidate_rows(index, wanted)
    exact = _segmented(seg_index)
    by_study: dict[str, list[dict[str, Any]]] = {}
    for row in seg_rows:
        by_study.setdefault(str(row["StudyInstanceUID"]), []).append(row)
    refs = []
    for ct in ct_rows:
        ct_ref = _ref(ct)
        for seg in by_study.get(str(ct["StudyInstanceUID"]), []):
            link = _link(seg, ct, exact)
            if link is not None:
                refs.append(TotalSegRef(_ref(seg), ct_ref, link))
    missing = sorted(wanted - {str(r["SeriesInstanceUID"]) for r in ct_rows})
    if missing:
        log.info("%d CT series are not in the index (e.g. %s)", len(missing), missing[0])
    refs.sort(key=lambda r: (r.ct.series_uid, r.seg.series_uid))
    log.info("TotalSegmentator SEGs: %d for %d CT series", len(refs), len(wanted))
    return refs


def _algorithm(seg: Dataset) -> tuple[str, str]:
    names = [str(item.get("SegmentAlgorithmName", "") or "") for item in seg.get("SegmentSequence", [])]
    name = next((n for n in names if n), "TotalSegmentator")
    for text in (name, str(seg.get("SeriesDescription", "") or "")):
        found = _VERSION.search(text)
        if found:
            return name, found[1]
    return name, "unknown"


def map_totalseg_levels(seg_ds: Dataset, volume: SeriesVolume, model: ModelLabels, *,
                        name: str | None = None) -> tuple[Dataset, list[str]]:
    """:func:`map_totalseg`, and the vertebrae that have voxels in the source SEG."""
    check_references(seg_ds, volume, name)
    described = {lvl for lvl in segment_levels(seg_ds).values() if lvl is not None}
    if not described:
        texts = sorted({str(item.get("SegmentLabel", "")) for item in seg_ds.SegmentSequence})
        raise SegmentationError(name or seg_name(seg_ds),
                                f"has no vertebra segments (its segments: {', '.join(texts[:12])}"
                                f"{', ...' if len(texts) > 12 else ''})")
    values, found = _model_values(label_volume(seg_ds, volume, _ALL_LEVELS, name=name), model)
    if not values.any():
        raise SegmentationError(name or seg_name(seg_ds),
                                f"none of its vertebrae ({', '.join(found) or 'no voxels'}) is a "
                                f"label of the model ({', '.join(model)})")
    algorithm, version = _algorithm(seg_ds)
    source_description = str(seg_ds.get("SeriesDescription", "") or algorithm)
    out = write_seg(volume, values, model,
                    series_description=f"Vertebrae from {source_description}"[:64],
                    algorithm_name=algorithm, algorithm_version=version,
                    content_description="TotalSegmentator vertebrae, numbered by model label",
                    content_datetime=_content_datetime(seg_ds),
                    uid_parts=(str(seg_ds.get("SOPInstanceUID", "")),))
    return out, found


def _model_values(levels: npt.NDArray[np.uint8],
                  model: ModelLabels) -> tuple[npt.NDArray[np.uint8], list[str]]:
    """Voxels labelled by vertebra (:data:`_ALL_LEVELS`) as the model's values; the levels seen."""
    lut = np.zeros(256, dtype=np.uint8)
    names = {value: level for level, value in _ALL_LEVELS.items()}
    for value, level in names.items():
        lut[value] = label_value(level, model) or 0
    found = [names[int(v)] for v in np.unique(levels) if int(v)]
    values: npt.NDArray[np.uint8] = lut[levels]
    return values, found


def _content_datetime(seg_ds: Dataset) -> datetime.datetime | None:
    """The source SEG's (0008,0023) Content Date and (0008,0033) Time, where they parse."""
    if not seg_ds.get("ContentDate"):
        return None
    stamp = str(seg_ds.ContentDate)[:8] + str(seg_ds.get("ContentTime", "") or "000000")[:6]
    try:
        return datetime.datetime.strptime(stamp.ljust(14, "0"), "%Y%m%d%H%M%S")
    except ValueError:
        return None


def map_totalseg(seg_ds: Dataset, volume: SeriesVolume, model_labels: ModelLabels, *,
                 name: str | None = None) -> Dataset:
    """A SEG of a TotalSegmentator SEG's vertebrae, numbered for a model.

    Parameters
    ----------
    seg_ds
        The TotalSegmentator SEG (read completely).
    volume
        The CT series it segments.
    model_labels
        The model's label set: vertebra segments become its values (merged into one for
        ``spine_cpu``); every other segment is dropped.
    name
        What error messages call the SEG (default its file name).

    Returns
    -------
    pydicom.dataset.Dataset
        A new SEG (:func:`~static_dicomweb.spine.seg.write_seg`) that references the same CT
        series, with UIDs derived from the source SEG's, ready for the converter.

    Raises
    ------
    SegmentationError
        If the SEG references another series, has no segments, no vertebra segments, or no
        vertebra the model has a label for.

    """
    return map_totalseg_levels(seg_ds, volume, model_labels, name=name)[0]


def import_totalseg(ct_series: Iterable[SeriesRef | str], store: Store, work_dir: str | Path, *,
                    model: str | ModelLabels = "localization_spine", source: Source | None = None,
                    index: Any = None, seg_index: Any = None, fetch_missing_ct: bool = True,
                    profile: str = "default") -> ImportSummary:
    """Import the TotalSegmentator SEGs of CT series into a site as labels for a model.

    Selection (:func:`select_totalseg`) → download (``source.fetch``, each SEG once) → the
    SEG's Referenced Series Sequence picks the requested CT series it segments → mapping
    (:func:`map_totalseg`) → conversion into ``store``
    (:func:`~static_dicomweb.convert.convert_files`; no indexes: aggregate afterwards, e.g.
    with :func:`~static_dicomweb.pipeline.aggregate_batches` on the returned summary).

    Parameters
    ----------
    ct_series
        The CT series (refs or Series Instance UIDs).
    store
        The site.  A CT series not yet in it is fetched from ``source`` and converted with
        its SEG when ``fetch_missing_ct``, else skipped.
    work_dir
        Where downloads (``totalseg/``, ``ct/``) and the new SEGs (``mapped/``) go; downloads
        resume there.
    model
        A model name (``spine_cpu``, ``localization_spine``) or a label set.
    source
        Where SEG and CT files come from; default ``IdcSource("nlst", index=index)``.
    index, seg_index
        As :func:`select_totalseg`.  Without ``seg_index``, NLST's CT series of one study
        often share a Series Number (the LUNG and STANDARD reconstructions), so a SEG is a
        candidate for each of them and is downloaded (about 110 MB) before its references
        tell which one it segments.
    fetch_missing_ct
        Fetch and convert CT series the site lacks.
    profile
        The site profile for the conversion.

    Returns
    -------
    ImportSummary
        The SEGs written (with the vertebrae found in each), what was skipped and why (a SEG
        series with the file and the reason, or a CT series that no SEG segments), and the
        conversion's counts.

    """
    started = time.perf_counter()
    labels = model_labels(model) if isinstance(model, str) else model
    requested = list(ct_series)
    index, source = _index_and_source(index, source)
    refs = select_totalseg(requested, index=index if index is not None else _source_index(source),
                           seg_index=seg_index)
    candidates: dict[str, list[TotalSegRef]] = {}
    for ref in refs:
        candidates.setdefault(ref.seg.series_uid, []).append(ref)
    run = _ImportRun(store, source, Path(work_dir), labels, fetch_missing_ct)
    for seg_uid, seg_refs in sorted(candidates.items()):
        run.import_seg(seg_uid, seg_refs)
    run.skip_unserved(requested, refs)
    result = convert_files(run.to_convert, store, profile=profile) if run.to_convert else None
    return run.summary(result, started)


def _index_and_source(index: Any, source: Source | None) -> tuple[Any, Source]:
    """IDC's index and source of NLST unless given (imported only when needed)."""
    if index is None and source is None:
        from idc_index import IDCClient  # type: ignore[attr-defined]

        index = IDCClient().index  # type: ignore[no-untyped-call]
    if source is None:
        from static_dicomweb.sources.idc import IdcSource

        source = IdcSource("nlst", index=index)
    return index, source


@dataclass
class _ImportRun:
    """What :func:`import_totalseg` gathers before it converts.

    The SEGs mapped, the files to convert (a CT series the site lacks before the first new
    SEG that needs it) and what was skipped, and why.
    """

    store: Store
    source: Source
    work: Path
    labels: ModelLabels
    fetch_missing_ct: bool
    volumes: dict[str, SeriesVolume | str] = field(default_factory=dict)
    to_convert: list[Path] = field(default_factory=list)
    pending: list[tuple[ImportedSeg, Path]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    def import_seg(self, seg_uid: str, seg_refs: list[TotalSegRef]) -> None:
        """Download one SEG series and map each of its files onto the CT series it segments."""
        try:
            files = self.source.fetch(seg_refs[0].seg, self.work / "totalseg")
        except RejectedInstanceError as exc:
            self.skipped.append({"series": seg_uid, "reason": str(exc)})
            return
        for path in files:
            outcome = self._map(path, seg_refs)
            if isinstance(outcome, str):
                self.skipped.append({"series": seg_uid, "reason": outcome})
            else:
                self.pending.append(outcome)
                self.to_convert.append(outcome[1])

    def _map(self, path: Path, seg_refs: list[TotalSegRef]) -> tuple[ImportedSeg, Path] | str:
        ref = _pick_ct(path, seg_refs)
        if isinstance(ref, str):
            return ref
        volume = _volume(ref, self.store, self.source, self.work, self.volumes, self.to_convert,
                         self.fetch_missing_ct)
        if isinstance(volume, str):
            return volume
        return _map_file(path, volume, self.labels, ref, self.work / "mapped")

    def skip_unserved(self, requested: Iterable[SeriesRef | str], refs: Iterable[TotalSegRef]) -> None:
        """Record each requested CT series that no imported SEG segments, and why."""
        served = {entry["ct_series"] for entry, _ in self.pending}
        listed = {ref.ct.series_uid for ref in refs}
        for item in requested:
            uid = item.series_uid if isinstance(item, SeriesRef) else str(item)
            if uid not in served:
                self.skipped.append({"series": uid, "reason": "no TotalSegmentator SEG in the index"
                                     if uid not in listed else "no TotalSegmentator SEG was imported for it"})

    def summary(self, result: ConversionResult | None, started: float) -> ImportSummary:
        """The import's summary, from the conversion of :attr:`to_convert` (None: nothing to convert)."""
        written = {w.sop for w in result.written} if result else set()
        imported = [entry for entry, _ in self.pending if entry["seg_instance"] in written]
        rejected = [{"path": r.path, "reason": r.reason} for r in result.rejected] if result else []
        seconds = time.perf_counter() - started
        log.info("TotalSegmentator import: %d SEGs imported, %d skipped, %d files rejected in %.1f s",
                 len(imported), len(self.skipped), len(rejected), seconds)
        return {"instances": len(result.written) if result else 0,
                "series": [[study, series] for study, series in result.touched()] if result else [],
                "rejected": rejected, "seconds": round(seconds, 3),
                "imported": imported, "skipped": self.skipped}


def _pick_ct(path: Path, refs: list[TotalSegRef]) -> TotalSegRef | str:
    """The candidate CT series a downloaded SEG references, or why none."""
    try:
        header = dcmread(path, stop_before_pixels=True)
    except (OSError, *UNREADABLE) as exc:
        return f"{path}: could not be read: {type(exc).__name__}: {exc}"
    referenced = [str(item.get("SeriesInstanceUID", ""))
                  for item in header.get("ReferencedSeriesSequence", [])]
    for ref in refs:
        if ref.ct.series_uid in referenced:
            return ref
    if not referenced and len(refs) == 1 and refs[0].linked_by == "segmented_SeriesInstanceUID":
        return refs[0]
    return (f"{path}: references series {', '.join(referenced) or '(none)'}, none of the "
            f"requested CT series ({', '.join(r.ct.series_uid for r in refs)})")


def _source_index(source: Source) -> Any:
    index = getattr(source, "index", None)
    if index is None:
        raise ValueError("no index to select TotalSegmentator SEGs from: pass index=")
    return index


def _volume(ref: TotalSegRef, store: Store, source: Source, work: Path,
            volumes: dict[str, SeriesVolume | str], to_convert: list[Path],
            fetch_missing_ct: bool) -> SeriesVolume | str:
    """The CT volume of ``ref`` (cached), or why there is none."""
    uid = ref.ct.series_uid
    if uid not in volumes:
        try:
            volumes[uid] = read_series_volume(store, ref.ct.study_uid, uid)
        except SeriesNotInSiteError as exc:
            if not fetch_missing_ct:
                volumes[uid] = str(exc)
            else:
                try:
                    files = source.fetch(ref.ct, work / "ct")
                    volumes[uid] = series_volume_from_files(files)
                    to_convert.extend(files)
                except RejectedInstanceError as fetch_exc:
                    volumes[uid] = str(fetch_exc)
        except RejectedInstanceError as exc:
            volumes[uid] = str(exc)
    return volumes[uid]


def _map_file(path: Path, volume: SeriesVolume, labels: ModelLabels, ref: TotalSegRef,
              out_dir: Path) -> tuple[ImportedSeg, Path] | str:
    """Map one downloaded SEG file; the entry and the new file, or why not."""
    try:
        seg = dcmread(path)
    except (OSError, *UNREADABLE) as exc:
        return f"{path}: could not be read: {type(exc).__name__}: {exc}"
    try:
        mapped, found = map_totalseg_levels(seg, volume, labels, name=str(path))
    except SegmentationError as exc:
        return str(exc)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{mapped.SOPInstanceUID}.dcm"
    buffer = io.BytesIO()
    dcmwrite(buffer, mapped, enforce_file_format=True)
    part = target.with_name(target.name + ".part")
    part.write_bytes(buffer.getvalue())
    part.replace(target)
    entry: ImportedSeg = {"ct_series": volume.series_uid, "source_seg": ref.seg.series_uid,
                          "seg_series": str(mapped.SeriesInstanceUID),
                          "seg_instance": str(mapped.SOPInstanceUID), "vertebrae": found,
                          "file": str(target)}
    log.info("%s: %d vertebrae (%s) → %s", path, len(found), ", ".join(found), target.name)
    return entry, target

