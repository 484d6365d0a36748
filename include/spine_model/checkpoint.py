"""Weights files: ``{"model": state_dict, "spec": name, ...}``, the layout MONAI Label loads."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from .specs import ModelSpec


def save(net: torch.nn.Module, spec: ModelSpec, path: Path, **info: Any) -> str:
    """Write the weights to ``path`` (MONAI Label reads the ``model`` key); return their SHA-256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": net.state_dict(), "spec": spec.name, "labels": spec.labels, **info}, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load(path: Path, spec: ModelSpec) -> torch.nn.Module:
    """A network of ``spec`` with the weights of ``path`` (a clear error when they do not fit)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise SystemExit(f"{path}: not a weights file ({exc})") from exc
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise SystemExit(f"{path}: no state dict in the weights file")
    net = spec.network()
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise SystemExit(f"{path}: weights do not fit model {spec.name}: {exc}") from exc
    return net
