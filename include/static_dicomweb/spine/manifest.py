"""The training manifest: which CT series of a site have SEG labels, and a held-out split.

Labels are the SEG series of the site (saved from MONAI Label by STOW-RS, or
imported from TotalSegmentator); each names its CT series in its
``ReferencedSeriesSequence``.  Where a CT series has several SEGs, the newest
(by SeriesDate, SeriesTime, then UID) is its label.  The split is by patient,
so the two reconstructions of one scan never land on both sides, and it is
deterministic: a patient is held out by the hash of its ID, the same in every
run, so Dice figures of successive models are comparable.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from static_dicomweb import keys
from static_dicomweb.dicomjson import JsonDict, decode, first
from static_dicomweb.errors import KeyNotFoundError
from static_dicomweb.qido import stored_answer
from static_dicomweb.store import Store

SEG_MODALITY = "SEG"
_PATIENT_ID, _STUDY_UID, _SERIES_UID = "00100020", "0020000D", "0020000E"
_SERIES_DATE, _SERIES_TIME = "00080021", "00080031"
_REFERENCED_SERIES = "00081115"


@dataclass(frozen=True)
class Case:
    """One labelled CT series."""

    study: str
    series: str
    seg_series: str
    patient: str
    split: str  # "train" or "heldout"


@dataclass(frozen=True)
class TrainingManifest:
    """What one training run learns from and is judged on.

    Attributes
    ----------
    model : str
        The model's name (``spine_cpu``, ``localization_spine``).
    cases : list of Case
        Labelled CT series, each with its split.
    skipped : list of str
        SEG series that name no CT series of the site, with the reason.
    """

    model: str
    cases: list[Case]
    skipped: list[str] = field(default_factory=list)

    @property
    def train(self) -> list[Case]:
        """The cases to train on."""
        return [c for c in self.cases if c.split == "train"]

    @property
    def heldout(self) -> list[Case]:
        """The cases to compute Dice on."""
        return [c for c in self.cases if c.split == "heldout"]

    @property
    def digest(self) -> str:
        """A short hash of the cases: the same labels give the same digest."""
        text = json.dumps([asdict(c) for c in self.cases], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        """A JSON-able form (XCom, the data set's ``manifest.json``)."""
        return {"model": self.model, "digest": self.digest, "cases": [asdict(c) for c in self.cases],
                "skipped": list(self.skipped)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainingManifest:
        """The inverse of :meth:`to_json`."""
        return cls(model=str(data["model"]), cases=[Case(**c) for c in data["cases"]],
                   skipped=list(data.get("skipped", [])))


def seg_rows(store: Store) -> list[JsonDict]:
    """The QIDO rows of every SEG series of the site (its ``series?Modality=SEG`` answer)."""
    return stored_answer(store, "series", {"Modality": [SEG_MODALITY]})


def _referenced_series(store: Store, study: str, seg_series: str) -> str | None:
    try:
        metadata = decode(store.get(keys.series_metadata(study, seg_series).key))
    except KeyNotFoundError:
        return None
    for instance in metadata:
        ref = first(instance, _REFERENCED_SERIES)
        if isinstance(ref, dict) and first(ref, _SERIES_UID):
            return str(first(ref, _SERIES_UID))
    return None


def _series_exists(store: Store, study: str, series: str) -> bool:
    return store.headers(keys.series_metadata(study, series).key) is not None


def held_out(patients: Sequence[str], fraction: float, salt: str = "spine") -> set[str]:
    """The patients held out: the ``fraction`` (at least one of two or more) with the smallest hashes."""
    unique = sorted(set(patients))
    if len(unique) < 2:
        return set()
    n = min(len(unique) - 1, max(1, math.floor(len(unique) * fraction + 0.5)))
    ranked = sorted(unique, key=lambda p: hashlib.sha256(f"{salt}:{p}".encode()).hexdigest())
    return set(ranked[:n])


def build_manifest(store: Store, model: str, *, heldout_fraction: float = 0.25) -> TrainingManifest:
    """The training manifest of a site: its labelled CT series and their split.

    Parameters
    ----------
    store : Store
        The site.
    model : str
        The model the labels are for (recorded; the labels are mapped when read).
    heldout_fraction : float
        Share of patients held out for Dice (at least one when there are two or more).
    """
    newest: dict[tuple[str, str], tuple[tuple[str, str, str], str, str]] = {}
    skipped: list[str] = []
    for row in seg_rows(store):
        study, seg = str(first(row, _STUDY_UID)), str(first(row, _SERIES_UID))
        ct = _referenced_series(store, study, seg)
        if ct is None:
            skipped.append(f"SEG {seg}: no ReferencedSeriesSequence")
            continue
        if not _series_exists(store, study, ct):
            skipped.append(f"SEG {seg}: its CT series {ct} is not in the site")
            continue
        order = (str(first(row, _SERIES_DATE, "")), str(first(row, _SERIES_TIME, "")), seg)
        patient = str(first(row, _PATIENT_ID, "") or study)
        if (study, ct) not in newest or newest[(study, ct)][0] < order:
            newest[(study, ct)] = (order, seg, patient)
    out = held_out([p for _, _, p in newest.values()], heldout_fraction)
    cases = [Case(study=study, series=ct, seg_series=seg, patient=patient,
                  split="heldout" if patient in out else "train")
             for (study, ct), (_, seg, patient) in sorted(newest.items())]
    return TrainingManifest(model=model, cases=cases, skipped=skipped)
