"""Vertebra levels, the label sets of the spine models, and what a SEG segment describes.

A voxel's label value in MONAI Label 0.8.5 is the SEG's Segment Number (it reads a SEG with
``pydicom_seg.MultiClassReader``), so every SEG written for a model numbers its segments by
the model's label values.  Two label sets exist:

- ``spine_cpu`` (the embedded CPU model): ``{"spine": 1}``, every vertebra merged;
- ``localization_spine`` (MONAI Label's radiology app): C1–C7 = 1–7, T1–T12 = 8–19 (the app
  spells them ``Th1``–``Th12``), L1–L5 = 20–24.

Segments are recognised by their Segmented Property Type code first (SNOMED CT, DICOM
CID 7603 "Vertebra"; the codes TotalSegmentator and IDC's TotalSegmentator-CT-Segmentations
use), then by their label text: ``SegmentLabel``, ``SegmentDescription`` and the code's
meaning, in TotalSegmentator's spelling (``vertebrae_T5``), dcmqi's (``T5 vertebra``),
MONAI Label's (``Th5``, ``spine``) or plain (``T5``).  MONAI Label writes every segment with
the type code 78961009 (Spleen) and the label name as its meaning, so a code that names no
vertebra never rules a segment out: the text decides then.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from pydicom.dataset import Dataset

log = logging.getLogger(__name__)

ModelLabels = Mapping[str, int]
"""A model's label set: label name → voxel value (= SEG Segment Number), values 1..N."""

LEVELS: Final[tuple[str, ...]] = (
    *(f"C{i}" for i in range(1, 8)),
    *(f"T{i}" for i in range(1, 13)),
    *(f"L{i}" for i in range(1, 6)),
)
"""The vertebra levels C1..C7, T1..T12, L1..L5, cranial to caudal."""

SPINE: Final[str] = "spine"
"""The pseudo-level of a segment that covers vertebrae without naming one (all merged)."""

SPINE_CPU: Final[str] = "spine_cpu"
LOCALIZATION_SPINE: Final[str] = "localization_spine"

SPINE_CPU_LABELS: Final[ModelLabels] = MappingProxyType({SPINE: 1})
"""Labels of the embedded CPU model: every vertebra is 1."""

LOCALIZATION_SPINE_LABELS: Final[ModelLabels] = MappingProxyType(
    {level: value for value, level in enumerate(LEVELS, start=1)})
"""Labels of MONAI Label's ``localization_spine``: C1 = 1 .. T1 = 8 .. L5 = 24."""

MODELS: Final[Mapping[str, ModelLabels]] = MappingProxyType(
    {SPINE_CPU: SPINE_CPU_LABELS, LOCALIZATION_SPINE: LOCALIZATION_SPINE_LABELS})
"""Every known model's label set, by model name."""

MONAI_LABEL_NAMES: Final[Mapping[str, str]] = MappingProxyType(
    {level: "Th" + level[1:] if level.startswith("T") else level for level in LEVELS})
"""How MONAI Label's radiology app names each level (``T5`` → ``Th5``)."""

SNOMED_VERTEBRA: Final[Mapping[str, str]] = MappingProxyType({
    "14806007": "C1", "39976000": "C2", "113205007": "C3", "5329002": "C4", "36978003": "C5",
    "36054005": "C6", "87391001": "C7",
    "64864005": "T1", "53733008": "T2", "1626008": "T3", "73071006": "T4", "56401006": "T5",
    "45296009": "T6", "62487009": "T7", "11068009": "T8", "82687006": "T9", "7610001": "T10",
    "12989004": "T11", "23215003": "T12",
    "66794005": "L1", "14293000": "L2", "36470004": "L3", "11994002": "L4", "49668003": "L5",
})
"""SNOMED CT code of each level (DICOM CID 7603; the codes in IDC's TotalSegmentator SEGs)."""

SNOMED_SPINE: Final[Mapping[str, str]] = MappingProxyType({
    "421060004": "Spine",  # structure of vertebral column
    "51282000": "Vertebra",  # TotalSegmentator's vertebrae_cervical/thoracic/lumbar groups
    "122494005": "Cervical spine", "122495006": "Thoracic spine", "122496007": "Lumbar spine",
})
"""SNOMED CT codes of segments that cover vertebrae without naming a level."""

LEVEL_CODES: Final[Mapping[str, str]] = MappingProxyType(
    {level: code for code, level in SNOMED_VERTEBRA.items()})
"""Level → its SNOMED CT code (for writing SEGs)."""

_SCHEMES = frozenset({"SCT", "SNM3", "SNOMED", "99SDM"})
_REGION_INDEX = {"C": 0, "T": 7, "TH": 7, "L": 19}
_REGION_SIZE = {"C": 7, "T": 12, "TH": 12, "L": 5}
_REGION_WORD = {"cervical": "C", "thoracic": "T", "lumbar": "L"}
_SHORT = re.compile(
    r"(?:vertebra(?:e|l)?[\s_-]*(?:body[\s_-]*)?)?"
    r"(?P<region>th|c|t|l)[\s_-]?0?(?P<number>\d{1,2})"
    r"(?:[\s_-]*vertebra(?:e|l)?(?:[\s_-]*body)?)?")
_LONG = re.compile(
    r"(?P<region>cervical|thoracic|lumbar)[\s_-]*vertebra(?:e|l)?[\s_-]*(?:body[\s_-]*)?"
    r"(?P<number>\d{1,2})(?:[\s_-]*\((?:th|c|t|l)\d{1,2}\))?")
_SPINE_TEXTS = frozenset({"spine", "vertebrae", "vertebra", "vertebral column", "spinal column",
                          "vertebral bodies", "vertebral body", "structure of vertebral column",
                          "vertebrae_body", "vertebrae_cervical", "vertebrae_thoracic",
                          "vertebrae_lumbar", "cervical spine", "thoracic spine", "lumbar spine"})


def level_from_text(text: str) -> str | None:
    """The level a segment's label text names, ``"spine"`` for the whole spine, or None.

    Parameters
    ----------
    text
        A SegmentLabel, SegmentDescription or code meaning, e.g. ``vertebrae_T5``,
        ``T5 vertebra``, ``Th5``, ``T5``, ``thoracic vertebra 5``, ``spine``.

    Returns
    -------
    str or None
        ``"C1"`` .. ``"L5"``, ``"spine"``, or None for anything else (sacral vertebrae,
        discs, the spinal cord and numbers outside a region's range included).

    """
    clean = " ".join(text.strip().lower().split())
    if not clean:
        return None
    if clean in _SPINE_TEXTS:
        return SPINE
    match = _SHORT.fullmatch(clean) or _LONG.fullmatch(clean)
    if match is None:
        return None
    region = match["region"]
    region = _REGION_WORD.get(region, region.upper())
    number = int(match["number"])
    if not 1 <= number <= _REGION_SIZE[region]:
        return None
    return LEVELS[_REGION_INDEX[region] + number - 1]


def level_from_code(item: Dataset | None) -> str | None:
    """The level a code item (a SNOMED CT code sequence item) names, ``"spine"``, or None."""
    if item is None:
        return None
    scheme = str(item.get("CodingSchemeDesignator", "")).strip().upper()
    value = str(item.get("CodeValue", "") or item.get("LongCodeValue", "")).strip()
    if scheme not in _SCHEMES:
        return None
    if value in SNOMED_VERTEBRA:
        return SNOMED_VERTEBRA[value]
    if value in SNOMED_SPINE:
        return SPINE
    return None


def _first(item: Dataset, keyword: str) -> Dataset | None:
    seq = item.get(keyword)
    return seq[0] if seq else None


def vertebra_level(segment_item: Dataset) -> str | None:
    """The vertebra level a SEG segment describes.

    Parameters
    ----------
    segment_item
        One item of the SEG's (0062,0002) Segment Sequence.

    Returns
    -------
    str or None
        ``"C1"`` .. ``"L5"`` for one vertebra; ``"spine"`` for a segment of vertebrae without a
        level (MONAI Label's ``spine``, SNOMED 421060004 "Spine", 51282000 "Vertebra"); None
        for every other structure.

    Notes
    -----
    The (0062,000F) Segmented Property Type code decides when it is a vertebra code; the
    label texts (SegmentLabel, SegmentDescription, the code's meaning) decide otherwise.
    When the code and the texts name different levels, the code wins and a warning names
    both.  (An early configuration of IDC's TotalSegmentator conversion paired the texts
    ``Vertebrae T1`` and ``Vertebrae T10``–``T12`` with one another's codes; the SEGs in IDC
    were made with a corrected one, where code and text agree.)

    """
    code = _first(segment_item, "SegmentedPropertyTypeCodeSequence")
    by_code = level_from_code(code)
    texts = [str(segment_item.get("SegmentLabel", "") or ""),
             str(segment_item.get("SegmentDescription", "") or "")]
    if code is not None:
        texts.append(str(code.get("CodeMeaning", "") or ""))
    by_text = next((lvl for lvl in map(level_from_text, texts) if lvl is not None), None)
    if by_code is not None:
        if by_text is not None and by_text != by_code and SPINE not in (by_text, by_code):
            log.warning("segment %s: its code %s says %s but its label %r says %s; using the code",
                        segment_item.get("SegmentNumber", "?"), code.get("CodeValue") if code else "",
                        by_code, texts[0] or texts[1], by_text)
        return by_code
    return by_text


def label_value(level: str, model_labels: ModelLabels) -> int | None:
    """The voxel value a model gives a level.

    Parameters
    ----------
    level
        ``"C1"`` .. ``"L5"`` or ``"spine"`` (what :func:`vertebra_level` returns), or a
        label name of the model.
    model_labels
        The model's label set (e.g. :data:`SPINE_CPU_LABELS`).

    Returns
    -------
    int or None
        The model's value for the level; for a model with a ``"spine"`` label and no
        per-level labels (``spine_cpu``) every vertebra's value is the spine's; None when
        the model cannot place it (``"spine"`` in ``localization_spine``).

    """
    if level in model_labels:
        return int(model_labels[level])
    if level in LEVELS:
        monai_name = MONAI_LABEL_NAMES[level]
        if monai_name in model_labels:
            return int(model_labels[monai_name])
        if SPINE in model_labels:
            return int(model_labels[SPINE])
    return None


def model_labels(name: str) -> ModelLabels:
    """The label set of the model called ``name``.

    Raises
    ------
    ValueError
        Naming the models there are.

    """
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None


def check_model_labels(labels: ModelLabels) -> list[tuple[str, int]]:
    """The (name, value) pairs of a label set in value order, checked to be 1..N.

    Raises
    ------
    ValueError
        If the values are not exactly 1..N (a SEG numbers its segments so, and MONAI Label
        reads Segment Numbers as voxel values) or exceed 255.

    """
    pairs = sorted(((str(name), int(value)) for name, value in labels.items()), key=lambda p: p[1])
    values = [value for _, value in pairs]
    if not pairs or values != list(range(1, len(pairs) + 1)) or len(pairs) > 255:
        raise ValueError(f"model label values must be 1..N (at most 255) without gaps, got {values}")
    return pairs
