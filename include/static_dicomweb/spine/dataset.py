"""A training data set from a site: one ``.npz`` per labelled CT series, and ``manifest.json``.

The layout is what :mod:`spine_model.data` (the trainer, which needs only
torch, MONAI and numpy) reads::

    manifest.json    {"model", "digest", "train": [CASE...], "heldout": [CASE...]}
    cases/<SE>.npz   image (x, y, z) HU float32, label (x, y, z) uint8, spacing (x, y, z) mm

Voxels are in (x, y, z) order, as MONAI's ITK reader gives a NIfTI of the
series (what MONAI Label infers on), and label values are the model's.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import Dataset, dcmread

from static_dicomweb import keys, multipart
from static_dicomweb.dicomjson import decode, first
from static_dicomweb.errors import KeyNotFoundError, RejectedInstanceError
from static_dicomweb.keys import ObjectSpec
from static_dicomweb.store import Store

from .labels import model_labels
from .manifest import Case, TrainingManifest
from .seg import label_volume
from .volume import read_series_volume

log = logging.getLogger(__name__)
_SOP_INSTANCE_UID = "00080018"


@dataclass(frozen=True)
class ExportedCase:
    """One case written: where, and how many voxels carry a label."""

    series: str
    split: str
    file: str
    labelled_voxels: int


def read_seg(store: Store, study: str, seg_series: str) -> Dataset:
    """The (first) SEG instance of a SEG series of the site, read completely."""
    try:
        metadata = decode(store.get(keys.series_metadata(study, seg_series).key))
    except KeyNotFoundError as exc:
        raise RejectedInstanceError(f"SEG series {seg_series}", "not in the site") from exc
    sops = sorted(str(first(m, _SOP_INSTANCE_UID)) for m in metadata)
    if not sops:
        raise RejectedInstanceError(f"SEG series {seg_series}", "has no instances")
    key = keys.instance(study, seg_series, sops[0]).key
    body = store.get(key)
    head, tail = multipart.p10_part_span(key)
    return dcmread(io.BytesIO(body[head:len(body) - tail]))


def export_case(store: Store, case: Case, model: str, out: Path) -> ExportedCase:
    """Write one case's ``.npz`` under ``out/cases``."""
    volume = read_series_volume(store, case.study, case.series)
    seg = read_seg(store, case.study, case.seg_series)
    labels = label_volume(seg, volume, model_labels(model), name=f"SEG series {case.seg_series}")
    rel = f"cases/{case.series}.npz"
    (out / "cases").mkdir(parents=True, exist_ok=True)
    sz, sy, sx = volume.spacing
    np.savez_compressed(out / rel, image=volume.hu.transpose(2, 1, 0),
                        label=labels.transpose(2, 1, 0), spacing=np.array([sx, sy, sz]))
    return ExportedCase(case.series, case.split, rel, int(np.count_nonzero(labels)))


def export_dataset(store: Store, manifest: TrainingManifest, out: Path) -> dict[str, object]:
    """Write the data set of ``manifest`` into the folder ``out``; return its ``manifest.json``.

    A case whose volume or SEG cannot be read is left out and named in
    ``rejected`` (the others are still written); a SEG with no voxel of the
    model's labels is left out too.
    """
    out.mkdir(parents=True, exist_ok=True)
    splits: dict[str, list[dict[str, str]]] = {"train": [], "heldout": []}
    rejected: list[str] = []
    for case in manifest.cases:
        try:
            done = export_case(store, case, manifest.model, out)
        except (RejectedInstanceError, KeyNotFoundError) as exc:
            rejected.append(f"{case.series}: {exc}")
            log.warning("left out of the training data: %s: %s", case.series, exc)
            continue
        if not done.labelled_voxels:
            rejected.append(f"{case.series}: SEG {case.seg_series} has no {manifest.model} label")
            (out / done.file).unlink()
            continue
        splits[case.split].append({"id": case.series, "file": done.file})
    data: dict[str, object] = {"model": manifest.model, "digest": manifest.digest, **splits,
                               "rejected": rejected}
    (out / "manifest.json").write_text(json.dumps(data, indent=1))
    return data


def upload_dataset(folder: Path, store: Store, prefix: str) -> str:
    """Copy a data set folder into the store under ``prefix`` (a SageMaker input channel)."""
    prefix = prefix.strip("/")
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        kind = "application/json" if rel.endswith(".json") else "application/octet-stream"
        store.put(ObjectSpec(f"{prefix}/{rel}", kind, cache_control=keys.INDEX), [path.read_bytes()])
    return prefix
