"""TotalSegmentator-like SEGs of the synthetic phantom, made with highdicom.

Provenance: the CT is ``static_dicomweb_sample``'s phantom; the SEG imitates IDC's
TotalSegmentator-CT-Segmentations (dcmqi from TotalSegmentator v1.5.6): one segment per
vertebra present, coded with the SNOMED CT codes of DICOM CID 7603, labelled ``T5 vertebra``
(or ``vertebrae_T5``, TotalSegmentator's own names), segment numbers in the order of the
label texts (so they are not the model's values), empty frames omitted, plus segments that
are not vertebrae and must be dropped: the phantom's heart and aorta (the ellipses that
``sample._phantom`` draws), a sacrum and an S1 vertebra.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from static_dicomweb.spine.labels import LEVEL_CODES, LEVELS
from static_dicomweb.spine.volume import SeriesVolume
from static_dicomweb_sample import spine_mask, vertebra_levels

ANATOMICAL_STRUCTURE = Code("123037004", "SCT", "Anatomical Structure")
FOV_MM = 350.0  # sample._FOV_MM


def phantom_order(volume: SeriesVolume, phantom: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """A phantom array (slice 0 most superior) in ``volume``'s order (ascending along the normal)."""
    out = np.empty_like(phantom)
    out[np.argsort(-volume.positions[:, 2])] = phantom
    return out


def expected_levels(volume: SeriesVolume, seed: int = 0, top_level: str = "T1") -> npt.NDArray[np.uint8]:
    z, y, x = volume.shape
    return phantom_order(volume, vertebra_levels(z, y, x, seed, top_level))


def expected_spine(volume: SeriesVolume, seed: int = 0) -> npt.NDArray[np.uint8]:
    z, y, x = volume.shape
    return phantom_order(volume, spine_mask(z, y, x, seed))


def _ellipse(rows: int, cols: int, cx: float, cy: float, ax: float, ay: float) -> npt.NDArray[np.bool_]:
    xs = (np.arange(cols) - (cols - 1) / 2.0) * FOV_MM / cols
    ys = (np.arange(rows) - (rows - 1) / 2.0) * FOV_MM / rows
    y, x = np.meshgrid(ys, xs, indexing="ij")
    return np.asarray(((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0)


def totalseg_like_seg(volume: SeriesVolume, *, seed: int = 0, top_level: str = "T1",
                      style: str = "idc", vertebra_codes: bool = True,
                      series_uid: str = "1.2.826.0.1.3680043.8.498.1.1",
                      sop_uid: str = "1.2.826.0.1.3680043.8.498.1.2") -> Dataset:
    """A SEG of ``volume`` (a phantom series) in the manner of IDC's TotalSegmentator SEGs.

    ``style`` ``"idc"`` labels vertebrae ``T5 vertebra``, ``"totalsegmentator"``
    ``vertebrae_T5``; without ``vertebra_codes`` the vertebrae carry the generic code
    "Anatomical Structure" and only their labels name them.
    """
    _, rows, cols = volume.shape
    levels = expected_levels(volume, seed, top_level)
    structures: list[tuple[str, Code, npt.NDArray[np.bool_]]] = []
    for value in sorted(int(v) for v in np.unique(levels) if v):
        level = LEVELS[value - 1]
        label = f"{level} vertebra" if style == "idc" else f"vertebrae_{level}"
        code = Code(LEVEL_CODES[level], "SCT", f"{level} vertebra") if vertebra_codes \
            else ANATOMICAL_STRUCTURE
        structures.append((label, code, levels == value))
    heart = np.broadcast_to(_ellipse(rows, cols, 22.0, -38.0, 46.0, 36.0), levels.shape)
    aorta = np.broadcast_to(_ellipse(rows, cols, 24.0, 30.0, 12.0, 12.0), levels.shape)
    tail = np.zeros(levels.shape, dtype=bool)
    tail[0, rows - 4:, cols // 2 - 2:cols // 2 + 2] = True  # posterior, the lowest slice
    s1 = np.zeros(levels.shape, dtype=bool)
    s1[0, rows - 6:rows - 4, cols // 2 - 2:cols // 2 + 2] = True
    structures += [("heart", codes.SCT.Heart, heart), ("aorta", codes.SCT.Aorta, aorta),
                   ("sacrum", codes.SCT.Sacrum, tail),
                   ("S1 vertebra" if style == "idc" else "vertebrae_S1",
                    Code("65985001", "SCT", "S1 vertebra"), s1)]
    structures.sort(key=lambda s: s[0].lower())  # dcmqi numbers segments in metadata order
    labelmap = np.zeros(levels.shape, dtype=np.uint8)
    descriptions = []
    algorithm = hd.AlgorithmIdentificationSequence(
        name="TotalSegmentator v1.5.6", family=codes.cid7162.ArtificialIntelligence,
        version="1.5.6")
    for number, (label, code, mask) in enumerate(structures, start=1):
        labelmap[mask & (labelmap == 0)] = number
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=label,
            segmented_property_category=ANATOMICAL_STRUCTURE, segmented_property_type=code,
            algorithm_type="AUTOMATIC", algorithm_identification=algorithm))
    seg = hd.seg.Segmentation(
        source_images=list(volume.headers), pixel_array=labelmap,
        segmentation_type="BINARY", segment_descriptions=descriptions,
        series_instance_uid=series_uid, series_number=200, sop_instance_uid=sop_uid,
        instance_number=1, manufacturer="QIICR", manufacturer_model_name="https://github.com/QIICR/dcmqi",
        software_versions="test", device_serial_number="0",
        series_description="TotalSegmentator(v1.5.6) Segmentation of Series 2",
        omit_empty_frames=True)
    for item, (label, _, _) in zip(seg.SegmentSequence, structures, strict=True):
        item.SegmentDescription = label
    return seg


def seg_bytes(seg: Dataset) -> bytes:
    import io

    from pydicom.filewriter import dcmwrite

    buffer = io.BytesIO()
    dcmwrite(buffer, seg, enforce_file_format=True)
    return buffer.getvalue()


def segment_labels(seg: Dataset) -> Sequence[str]:
    return [str(item.SegmentLabel) for item in seg.SegmentSequence]
