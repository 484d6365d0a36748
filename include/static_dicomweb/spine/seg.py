"""DICOM SEG ↔ label volumes of a CT series, in a model's label values.

Reading (:func:`label_volume`) places each frame of a SEG on the slice of the CT volume it was
derived from (its per-frame (0008,9124) Derivation Image Sequence names the source SOP
Instance UID), or, without that, on the slice at its (0020,0032) Image Position (Patient).
Each segment becomes the model's value for the vertebra it describes
(:func:`static_dicomweb.spine.labels.vertebra_level`); segments of anything else are left out.

Writing (:func:`write_seg`) makes a BINARY Segmentation with highdicom: one segment per model
label in value order, so that Segment Number == label value, which is how MONAI Label 0.8.5
(``pydicom_seg.MultiClassReader``) turns a SEG back into a label volume.  Segments without a
voxel are still described.  Frames without a voxel are left out (a segment of one vertebra
spans a few slices), except that each end slice of the CT keeps a frame: ``MultiClassReader``
sizes its volume from the lowest to the highest frame position present, so a SEG without
frames at either end would come back shorter than the CT and out of register with it.  UIDs
and dates are derived from the inputs, so writing the same labels for the same series again
gives the same bytes.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.pixels.utils import iter_pixels
from pydicom.sr.coding import Code
from pydicom.uid import PYDICOM_ROOT_UID, generate_uid
from pydicom.valuerep import DA, TM

from static_dicomweb import __version__
from static_dicomweb.errors import RejectedInstanceError
from static_dicomweb.spine.labels import (
    LEVEL_CODES,
    LEVELS,
    SPINE,
    ModelLabels,
    check_model_labels,
    label_value,
    level_from_text,
    vertebra_level,
)
from static_dicomweb.spine.volume import SeriesVolume

log = logging.getLogger(__name__)

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
LABEL_MAP_SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"
ANATOMICAL_STRUCTURE = Code("123037004", "SCT", "Anatomical Structure")
SPINE_CODE = Code("421060004", "SCT", "Spine")
#: MONAI Label 0.8.5's SEGs (dcmqi via ``nifti_to_dicom_seg``) name this algorithm.
MONAI_LABEL_ALGORITHM = "MONAILABEL"


class SegmentationError(RejectedInstanceError):
    """A SEG that cannot be read against a CT volume (names the file or SEG and why)."""


def seg_name(seg: Dataset) -> str:
    """The SEG's file name when read from a file, else ``SEG <SOP Instance UID>``."""
    filename = getattr(seg, "filename", None)
    if isinstance(filename, str) and filename:
        return filename
    return f"SEG {seg.get('SOPInstanceUID', '?')}"


def segment_levels(seg: Dataset) -> dict[int, str | None]:
    """Each segment's Segment Number → the vertebra level it describes (or None)."""
    return {int(item.SegmentNumber): vertebra_level(item) for item in seg.get("SegmentSequence", [])}


def segment_values(seg: Dataset, model_labels: ModelLabels) -> dict[int, int]:
    """Each segment's Segment Number → the model's label value, for the segments it can place.

    A segment is placed by the level it describes, else by its SegmentLabel when that is one
    of the model's label names.  In a SEG that MONAI Label wrote (algorithm ``MONAILABEL``)
    a segment neither places keeps its Segment Number as its value when that is one of the
    model's values: that is how MONAI Label itself reads it.
    """
    values = set(int(v) for v in model_labels.values())
    out: dict[int, int] = {}
    for item in seg.get("SegmentSequence", []):
        number = int(item.SegmentNumber)
        level = vertebra_level(item)
        value = label_value(level, model_labels) if level is not None else None
        if value is None:
            name = str(item.get("SegmentLabel", "") or "")
            value = int(model_labels[name]) if name in model_labels else None
        if value is None and _is_monai_label(item) and number in values:
            log.info("%s: segment %d (%r) kept as value %d (MONAI Label's numbering)",
                     seg_name(seg), number, item.get("SegmentLabel", ""), number)
            value = number
        if value is not None:
            out[number] = value
    return out


def _is_monai_label(item: Dataset) -> bool:
    algo = item.get("SegmentAlgorithmName", "")
    names = algo if isinstance(algo, (list, tuple)) or type(algo).__name__ == "MultiValue" else [algo]
    return any(str(n).upper() == MONAI_LABEL_ALGORITHM for n in names)


def _fail(seg: Dataset, reason: str, name: str | None) -> SegmentationError:
    return SegmentationError(name or seg_name(seg), reason)


def check_references(seg: Dataset, volume: SeriesVolume, name: str | None = None) -> None:
    """Check that a SEG is a segmentation of ``volume``'s series.

    Raises
    ------
    SegmentationError
        If ``seg`` is not a Segmentation, has no segments, references another series (by
        (0008,1115) Referenced Series Sequence) or, without references, another frame of
        reference.

    """
    sop_class = str(seg.get("SOPClassUID", ""))
    if sop_class not in (SEGMENTATION_STORAGE, LABEL_MAP_SEGMENTATION_STORAGE):
        raise _fail(seg, f"not a Segmentation (SOP Class {sop_class or 'missing'})", name)
    if not seg.get("SegmentSequence"):
        raise _fail(seg, "has no segments ((0062,0002) Segment Sequence is empty or missing)", name)
    referenced = [str(item.get("SeriesInstanceUID", ""))
                  for item in seg.get("ReferencedSeriesSequence", [])]
    if referenced and volume.series_uid not in referenced:
        raise _fail(seg, f"references series {', '.join(referenced)}, not the CT series "
                         f"{volume.series_uid}", name)
    frame_of_reference = str(seg.get("FrameOfReferenceUID", ""))
    if (not referenced and frame_of_reference and volume.frame_of_reference_uid
            and frame_of_reference != volume.frame_of_reference_uid):
        raise _fail(seg, f"is in frame of reference {frame_of_reference}, the CT series "
                         f"{volume.series_uid} in {volume.frame_of_reference_uid}", name)


def label_volume(seg: Dataset, volume: SeriesVolume, model_labels: ModelLabels, *,
                 name: str | None = None) -> npt.NDArray[np.uint8]:
    """The labels of a SEG on a CT volume, in a model's values.

    Parameters
    ----------
    seg
        The Segmentation (BINARY or FRACTIONAL Segmentation Storage, or Label Map
        Segmentation Storage), read completely (pixel data included).
    volume
        The CT series it segments.
    model_labels
        The model's label set; segments it cannot place (non-vertebrae) are left out.
    name
        What error messages call the SEG (default: its file name, else its SOP Instance UID).

    Returns
    -------
    numpy.ndarray
        ``uint8`` ``(z, y, x)`` aligned with ``volume.hu``.  Where placed segments overlap,
        the higher value wins (a FRACTIONAL frame counts from half its maximum value).

    Raises
    ------
    SegmentationError
        As :func:`check_references`; also when a frame's size or orientation differs from the
        volume's, or a frame lies on no slice of the volume.

    """
    check_references(seg, volume, name)
    values = segment_values(seg, model_labels)
    out = np.zeros(volume.shape, dtype=np.uint8)
    if not values:
        log.info("%s: no segment the model places (levels: %s)", name or seg_name(seg),
                 sorted({lvl for lvl in segment_levels(seg).values() if lvl}) or "none")
        return out
    _check_frame_geometry(seg, volume, name)
    frames = _frame_plan(seg, volume, values, name)
    labelmap = str(seg.SOPClassUID) == LABEL_MAP_SEGMENTATION_STORAGE
    fractional = str(seg.get("SegmentationType", "")).upper() == "FRACTIONAL"
    threshold = float(seg.get("MaximumFractionalValue", 1) or 1) / 2.0 if fractional else 0.0
    lut = np.zeros(65536, dtype=np.uint8)
    for number, value in values.items():
        lut[number] = value
    indices = [index for index, _, _ in frames]
    if not indices:  # placed segments without frames: no voxels
        return out
    for (_, z, number), pixels in zip(frames, iter_pixels(seg, indices=indices), strict=True):
        if labelmap:
            placed = lut[np.asarray(pixels, dtype=np.int64)]
        else:
            mask = pixels >= threshold if fractional else pixels > 0
            placed = np.where(mask, np.uint8(values[number]), np.uint8(0))
        np.maximum(out[z], placed, out=out[z])
    return out


def _shared(seg: Dataset) -> Dataset:
    seq = seg.get("SharedFunctionalGroupsSequence")
    return seq[0] if seq else Dataset()


def _check_frame_geometry(seg: Dataset, volume: SeriesVolume, name: str | None) -> None:
    _, rows, cols = volume.shape
    if (int(seg.get("Rows", 0)), int(seg.get("Columns", 0))) != (rows, cols):
        raise _fail(seg, f"frames are {seg.get('Rows')}x{seg.get('Columns')}, the CT slices "
                         f"{rows}x{cols} (in-plane cropped or resampled SEGs are not read)", name)
    orientation = _shared(seg).get("PlaneOrientationSequence")
    if orientation:
        iop = np.asarray([float(v) for v in orientation[0].ImageOrientationPatient])
        if not np.allclose(iop, volume.orientation, atol=1e-3):
            raise _fail(seg, f"frame orientation {iop.tolist()} differs from the CT's "
                             f"{list(volume.orientation)}", name)


def _frame_plan(seg: Dataset, volume: SeriesVolume, values: dict[int, int],
                name: str | None) -> list[tuple[int, int, int]]:
    """(frame index, slice index, segment number) of every frame of a placed segment."""
    shared = _shared(seg)
    shared_segment = shared.get("SegmentIdentificationSequence")
    shared_position = shared.get("PlanePositionSequence")
    labelmap = str(seg.SOPClassUID) == LABEL_MAP_SEGMENTATION_STORAGE
    by_sop = {sop: z for z, sop in enumerate(volume.sop_instance_uids)}
    normal = volume.normal
    distances = volume.positions @ normal
    tolerance = max(0.01, 0.1 * volume.spacing[0])
    per_frame = seg.get("PerFrameFunctionalGroupsSequence", [])
    count = int(seg.get("NumberOfFrames", len(per_frame)) or 0)
    if len(per_frame) != count:
        raise _fail(seg, f"has {count} frames but {len(per_frame)} per-frame functional groups",
                    name)
    plan = []
    for index, item in enumerate(per_frame):
        ident = item.get("SegmentIdentificationSequence") or shared_segment
        number = int(ident[0].ReferencedSegmentNumber) if ident else 0
        if not labelmap and number not in values:
            continue
        z = _source_slice(item, by_sop)
        if z is None:
            plane = item.get("PlanePositionSequence") or shared_position
            if not plane:
                raise _fail(seg, f"frame {index + 1} names neither a source image nor a position",
                            name)
            position = np.asarray([float(v) for v in plane[0].ImagePositionPatient])
            z = int(np.argmin(np.abs(distances - position @ normal)))
            if abs(distances[z] - position @ normal) > tolerance:
                raise _fail(seg, f"frame {index + 1} at {position.tolist()} lies on no slice of "
                                 f"the CT series {volume.series_uid}", name)
            offset = position - volume.positions[z]
            if np.abs(offset - (offset @ normal) * normal).max() > 0.01 * min(volume.spacing[1:]):
                raise _fail(seg, f"frame {index + 1} is shifted in-plane from its CT slice "
                                 f"({offset.tolist()} mm)", name)
        plan.append((index, z, number))
    return plan


def _source_slice(item: Dataset, by_sop: dict[str, int]) -> int | None:
    for derivation in item.get("DerivationImageSequence", []):
        for source in derivation.get("SourceImageSequence", []):
            z = by_sop.get(str(source.get("ReferencedSOPInstanceUID", "")))
            if z is not None:
                return z
    return None


def segment_code(name: str) -> Code:
    """The Segmented Property Type code of a model label name (a level, or ``spine``).

    Raises
    ------
    ValueError
        For a name that is neither a vertebra level nor the spine.

    """
    level = level_from_text(name)
    if level == SPINE:
        return SPINE_CODE
    if level in LEVELS:
        return Code(LEVEL_CODES[level], "SCT", f"{level} vertebra")
    raise ValueError(f"label {name!r} names no vertebra level and not the spine; no SNOMED CT "
                     "code is known for it")


def labels_digest(labels_zyx: npt.NDArray[Any]) -> str:
    """SHA-256 of a label volume's shape and voxels (what derived UIDs depend on)."""
    arr = np.ascontiguousarray(labels_zyx, dtype=np.uint8)
    return hashlib.sha256(repr(arr.shape).encode() + arr.tobytes()).hexdigest()


def derived_uid(*parts: object) -> str:
    """A UID that is a pure function of ``parts`` (pydicom's root, hashed suffix)."""
    return str(generate_uid(prefix=PYDICOM_ROOT_UID,
                            entropy_srcs=["static-dicomweb spine", *(str(p) for p in parts)]))


def write_seg(volume: SeriesVolume, labels_zyx: npt.NDArray[Any], model_labels: ModelLabels, *,
              series_description: str, algorithm_name: str, algorithm_version: str = __version__,
              algorithm_type: str = "AUTOMATIC", series_number: int | None = None,
              content_label: str = "VERTEBRAE", content_description: str | None = None,
              content_datetime: datetime | None = None, manufacturer: str = "static-dicomweb",
              all_frames: bool = False, uid_parts: Sequence[object] = ()) -> Dataset:
    """A DICOM SEG of a label volume on a CT series, for one model.

    Parameters
    ----------
    volume
        The CT series (its ``headers`` become the SEG's source images).
    labels_zyx
        Label values ``(z, y, x)`` in ``volume`` order; every value is 0 or one of the
        model's.
    model_labels
        The model's label set (values 1..N): one segment each, Segment Number == value,
        SegmentLabel == the label name, coded with SNOMED CT (a level's vertebra code, or
        421060004 "Spine").
    series_description
        (0008,103E) of the SEG.
    algorithm_name, algorithm_version
        The Segment Algorithm Name and the version in each segment's algorithm
        identification (family: Artificial Intelligence).
    algorithm_type
        ``AUTOMATIC``, ``SEMIAUTOMATIC`` or ``MANUAL`` (no algorithm identification then).
    series_number
        (0020,0011); default 100 × the CT's Series Number + 1.
    content_label, content_description
        (0070,0080) and (0070,0081).
    content_datetime
        Content, series and instance creation date and time; default the CT's Study Date
        and Study Time, so that reruns give the same bytes.
    manufacturer
        (0008,0070) of the SEG.
    all_frames
        Write a frame for every segment and slice.  By default only frames with a voxel are
        written, plus one empty frame on each end slice of the volume that has none (see the
        module's notes on ``MultiClassReader``): for ``localization_spine`` on a chest CT
        about 20 times smaller.
    uid_parts
        More inputs the derived Series and SOP Instance UIDs depend on (e.g. the source SEG's
        UID for an import).

    Returns
    -------
    pydicom.dataset.Dataset
        The SEG (with its file meta), ready for ``dcmwrite``.  Its Series and SOP Instance
        UIDs derive from the CT series, the labels' digest, the model's labels, the
        algorithm and ``uid_parts``.

    Raises
    ------
    ValueError
        If the labels' shape differs from the volume's, a value is not the model's, or a
        label name has no code.

    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    pairs = check_model_labels(model_labels)
    labels = _checked_labels(labels_zyx, volume, pairs)
    algo_type = algorithm_type.upper()
    algorithm = None if algo_type == "MANUAL" else hd.AlgorithmIdentificationSequence(
        name=algorithm_name, family=codes.cid7162.ArtificialIntelligence,
        version=algorithm_version)
    descriptions = [hd.seg.SegmentDescription(
        segment_number=value, segment_label=label_name,
        segmented_property_category=ANATOMICAL_STRUCTURE,
        segmented_property_type=segment_code(label_name), algorithm_type=algo_type,
        algorithm_identification=algorithm) for label_name, value in pairs]
    ct = volume.headers[0]
    when = content_datetime or _study_datetime(ct)
    date, time = when.strftime("%Y%m%d"), when.strftime("%H%M%S")
    digest = labels_digest(labels)
    parts = (volume.series_uid, digest, pairs, algorithm_name, algorithm_version, algo_type,
             series_description, all_frames, *uid_parts)
    if series_number is None:
        series_number = 100 * int(ct.get("SeriesNumber") or 0) + 1
    seg = hd.seg.Segmentation(
        source_images=list(volume.headers),
        pixel_array=labels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=derived_uid("series", *parts),
        series_number=series_number,
        sop_instance_uid=derived_uid("sop", *parts),
        instance_number=1,
        manufacturer=manufacturer,
        manufacturer_model_name="static-dicomweb spine",
        software_versions=f"static-dicomweb {__version__}",
        device_serial_number="static-dicomweb",
        content_label=content_label,
        content_description=content_description,
        omit_empty_frames=not all_frames,
        series_description=series_description,
        content_date=date, content_time=time, series_date=date, series_time=time,
    )
    _set_creation_datetime(seg, date, time)
    if not all_frames:
        _add_end_frames(seg, volume)
    _set_dimension_organization(seg, derived_uid("dimension-organization", *parts))
    log.info("SEG %s of series %s: %d segments, %d frames, %d labelled voxels",
             seg.SOPInstanceUID, volume.series_uid, len(pairs), int(seg.NumberOfFrames),
             int(np.count_nonzero(labels)))
    return seg


def _checked_labels(labels_zyx: npt.NDArray[Any], volume: SeriesVolume,
                    pairs: Sequence[tuple[str, int]]) -> npt.NDArray[np.uint8]:
    """The labels as ``uint8``, once their shape is the volume's and every value the model's."""
    labels = np.asarray(labels_zyx)
    if labels.shape != volume.shape:
        raise ValueError(f"labels are {labels.shape}, the volume {volume.shape}")
    if not np.issubdtype(labels.dtype, np.integer) and not np.issubdtype(labels.dtype, np.bool_):
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    present = {int(v) for v in np.unique(labels)}
    unknown = present - {0} - {value for _, value in pairs}
    if unknown:
        raise ValueError(f"label values {sorted(unknown)} are not the model's "
                         f"({', '.join(f'{n}={v}' for n, v in pairs)})")
    return labels.astype(np.uint8)


def _set_creation_datetime(seg: Dataset, date: str, time: str) -> None:
    """Instance creation and contribution date and time: the content's, so reruns give the same bytes."""
    seg.InstanceCreationDate = DA(date)
    seg.InstanceCreationTime = TM(time)
    for item in seg.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = date + time


def _set_dimension_organization(seg: Dataset, uid: str) -> None:
    """One derived Dimension Organization UID in place of highdicom's random one."""
    for item in seg.get("DimensionOrganizationSequence", []):
        item.DimensionOrganizationUID = uid
    for item in seg.get("DimensionIndexSequence", []):
        item.DimensionOrganizationUID = uid


def _add_end_frames(seg: Dataset, volume: SeriesVolume) -> None:
    """Give the first and the last slice of the volume a frame (an empty one of segment 1).

    ``pydicom_seg.MultiClassReader`` (MONAI Label) spans its volume from the lowest to the
    highest frame position; without a frame on each end slice the label volume it returns
    would be shorter than the CT.  Frames stay in highdicom's order (segment, then position)
    and the position dimension's indices are renumbered over the positions now present.
    """
    items = list(seg.PerFrameFunctionalGroupsSequence)
    normal = volume.normal
    ends = volume.positions @ normal
    tolerance = max(0.01, 0.1 * volume.spacing[0])

    def distance(item: Dataset) -> float:
        return float(np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
                     @ normal)

    present = np.asarray([distance(item) for item in items])
    missing = [z for z in sorted({0, len(ends) - 1})
               if not np.any(np.abs(present - ends[z]) <= tolerance)]
    if not missing:
        return
    by_index = sorted({(int(it.FrameContentSequence[0].DimensionIndexValues[-1]), d)
                       for it, d in zip(items, present.tolist(), strict=True)})
    descending = bool(len(by_index) > 1 and by_index[0][1] > by_index[-1][1])
    frame_bits = int(seg.Rows) * int(seg.Columns)
    bits = np.unpackbits(np.frombuffer(seg.PixelData, dtype=np.uint8), bitorder="little")
    frames = list(bits[:len(items) * frame_bits].reshape(len(items), frame_bits))
    for z in missing:
        items.append(_empty_frame_item(items[0], volume, z))
        frames.append(np.zeros(frame_bits, dtype=np.uint8))
    _renumber_positions(items, [distance(item) for item in items], descending)
    order = sorted(range(len(items)),
                   key=lambda i: tuple(int(v) for v in items[i].FrameContentSequence[0].DimensionIndexValues))
    seg.PerFrameFunctionalGroupsSequence = [items[i] for i in order]
    packed = np.packbits(np.concatenate([frames[i] for i in order]), bitorder="little").tobytes()
    seg.PixelData = packed + b"\x00" * (len(packed) % 2)
    seg.NumberOfFrames = len(items)


def _empty_frame_item(model: Dataset, volume: SeriesVolume, z: int) -> Dataset:
    """The functional groups of an empty frame of segment 1 on slice ``z``, from ``model``'s."""
    item = copy.deepcopy(model)
    if "SegmentIdentificationSequence" in item:  # (in the shared groups for one segment)
        item.SegmentIdentificationSequence[0].ReferencedSegmentNumber = 1
    item.PlanePositionSequence[0].ImagePositionPatient = volume.headers[z].ImagePositionPatient
    source = item.DerivationImageSequence[0].SourceImageSequence[0]
    source.ReferencedSOPInstanceUID = volume.sop_instance_uids[z]
    source.ReferencedSOPClassUID = volume.headers[z].SOPClassUID
    return item


def _renumber_positions(items: Sequence[Dataset], distances: Sequence[float], descending: bool) -> None:
    """Dimension index values: the segment, then the rank of the frame's position."""
    levels = sorted({round(d, 3) for d in distances}, reverse=descending)
    rank = {level: index for index, level in enumerate(levels, start=1)}
    for item, d in zip(items, distances, strict=True):
        indices = list(item.FrameContentSequence[0].DimensionIndexValues)
        if "SegmentIdentificationSequence" in item:
            indices[0] = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        indices[-1] = rank[round(d, 3)]
        item.FrameContentSequence[0].DimensionIndexValues = indices


def _study_datetime(ds: Dataset) -> datetime:
    date = str(ds.get("StudyDate", "") or "20000101")[:8]
    time = str(ds.get("StudyTime", "") or "000000").split(".")[0].ljust(6, "0")[:6]
    try:
        return datetime.strptime(date + time, "%Y%m%d%H%M%S")
    except ValueError:
        return datetime(2000, 1, 1)
