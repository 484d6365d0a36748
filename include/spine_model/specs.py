"""Model specifications: labels, voxel spacing, patch size, network."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from monai.networks.nets import SegResNet


@dataclass(frozen=True)
class ModelSpec:
    """What a model is: its labels, its input geometry and its network.

    Attributes
    ----------
    name : str
        The model's name (the MONAI Label model name too).
    labels : dict of str to int
        Label name → voxel value (background is 0).
    spacing : tuple of float
        Voxel spacing (x, y, z) in mm that the network sees.
    roi : tuple of int
        Patch size (x, y, z) for training crops and sliding-window inference.
    init_filters : int
        SegResNet width.
    blocks_down, blocks_up : tuple of int
        SegResNet depth.
    hu_range : tuple of float
        HU window scaled to [0, 1] (values outside are clipped).
    """

    name: str
    labels: dict[str, int]
    spacing: tuple[float, float, float]
    roi: tuple[int, int, int]
    init_filters: int
    blocks_down: tuple[int, ...]
    blocks_up: tuple[int, ...]
    hu_range: tuple[float, float] = (-1000.0, 1900.0)

    @property
    def out_channels(self) -> int:
        """Number of network outputs: every label plus background."""
        return max(self.labels.values()) + 1

    def network(self) -> torch.nn.Module:
        """A new, randomly initialised network of this spec."""
        return SegResNet(spatial_dims=3, in_channels=1, out_channels=self.out_channels,
                         init_filters=self.init_filters, blocks_down=self.blocks_down,
                         blocks_up=self.blocks_up, dropout_prob=0.0)


#: The embedded default: a small SegResNet at 3 mm that trains on two CPU cores in seconds.
SPINE_CPU = ModelSpec(name="spine_cpu", labels={"spine": 1}, spacing=(4.0, 4.0, 4.0),
                      roi=(32, 32, 32), init_filters=8, blocks_down=(1, 2, 2), blocks_up=(1, 1))

LOCALIZATION_LABELS = {
    **{f"C{i}": i for i in range(1, 8)},
    **{f"Th{i}": 7 + i for i in range(1, 13)},
    **{f"L{i}": 19 + i for i in range(1, 6)},
}
#: MONAI Label radiology app's ``localization_spine`` (full size; weights from your own training).
LOCALIZATION_SPINE = ModelSpec(name="localization_spine", labels=LOCALIZATION_LABELS,
                               spacing=(1.3, 1.3, 1.3), roi=(96, 96, 96), init_filters=32,
                               blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1))

SPECS: dict[str, ModelSpec] = {s.name: s for s in (SPINE_CPU, LOCALIZATION_SPINE)}


def spec(name: str) -> ModelSpec:
    """The spec of a model by name; a clear error for an unknown one."""
    try:
        return SPECS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(SPECS))}") from None
