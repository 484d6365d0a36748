"""Training data sets on disk, and the preprocessing every model input gets.

A data set is a folder::

    manifest.json    {"model": "spine_cpu", "train": [CASE...], "heldout": [CASE...]}
    cases/<id>.npz   image (x, y, z) HU, label (x, y, z) uint8, spacing (x, y, z) mm

where ``CASE`` is ``{"id": SeriesInstanceUID, "file": "cases/<id>.npz"}``.  Arrays are
in the (x, y, z) order MONAI's ITK reader gives a NIfTI of the same series, so a
network trained here reads MONAI Label's images the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from .specs import ModelSpec


@dataclass(frozen=True)
class Case:
    """One preprocessed case: tensors at the model's spacing."""

    id: str
    image: torch.Tensor  # (1, X, Y, Z) float32 in [-1, 1]
    label: torch.Tensor  # (1, X, Y, Z) int64


def read_manifest(root: Path) -> dict[str, Any]:
    """The data set's manifest; a clear error naming the file when it is missing or bad."""
    path = root / "manifest.json"
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"{path}: not a training manifest ({exc})") from exc
    for split in ("train", "heldout"):
        if not isinstance(manifest.get(split), list):
            raise SystemExit(f"{path}: no {split!r} list")
    return manifest


def scale_intensity(hu: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """HU → [-1, 1] over the spec's window (values outside are clipped)."""
    lo, hi = spec.hu_range
    return (hu.clamp(lo, hi) - lo) / (hi - lo) * 2.0 - 1.0


def resample(volume: torch.Tensor, spacing: tuple[float, ...], target: tuple[float, ...],
             *, label: bool) -> torch.Tensor:
    """Resample a (C, X, Y, Z) tensor from ``spacing`` to ``target`` (linear, or nearest for labels)."""
    size = [max(1, round(n * s / t)) for n, s, t in zip(volume.shape[1:], spacing, target, strict=True)]
    mode = "nearest" if label else "trilinear"
    out = F.interpolate(volume[None].float(), size=size, mode=mode,
                        **({} if label else {"align_corners": False}))[0]
    return out.round().long() if label else out


def preprocess_image(hu: np.ndarray, spacing: tuple[float, ...], spec: ModelSpec) -> torch.Tensor:
    """An (X, Y, Z) HU array → the network's (1, X', Y', Z') input at the spec's spacing."""
    image = torch.from_numpy(np.ascontiguousarray(hu, dtype=np.float32))[None]
    return scale_intensity(resample(image, spacing, spec.spacing, label=False), spec)


def load_case(root: Path, entry: dict[str, Any], spec: ModelSpec) -> Case:
    """Read and preprocess one case of a data set."""
    path = root / entry["file"]
    try:
        with np.load(path) as npz:
            hu, label, spacing = npz["image"], npz["label"], tuple(float(s) for s in npz["spacing"])
    except (OSError, KeyError, ValueError) as exc:
        raise SystemExit(f"{path}: not a training case ({exc})") from exc
    if hu.shape != label.shape:
        raise SystemExit(f"{path}: image {hu.shape} and label {label.shape} differ in shape")
    lab = torch.from_numpy(np.ascontiguousarray(label, dtype=np.int64))[None]
    return Case(id=str(entry["id"]), image=preprocess_image(hu, spacing, spec),
                label=resample(lab, spacing, spec.spacing, label=True))


def load_split(root: Path, split: str, spec: ModelSpec) -> list[Case]:
    """Every case of one split (``train`` or ``heldout``) of the data set at ``root``."""
    return [load_case(root, e, spec) for e in read_manifest(root)[split]]
