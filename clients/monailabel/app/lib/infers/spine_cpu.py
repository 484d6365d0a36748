"""Inference of ``spine_cpu``: the preprocessing of ``spine_model`` (spacing, HU window)."""

from typing import Callable, Sequence

from monai.inferers import Inferer, SlidingWindowInferer
from monai.transforms import (
    Activationsd,
    AsDiscreted,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    ScaleIntensityRanged,
    Spacingd,
)

from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask
from monailabel.transform.post import Restored


class SpineCpuInfer(BasicInferTask):
    def __init__(self, path, network, spec, labels, **kwargs):
        super().__init__(path=path, network=network, type=InferType.SEGMENTATION, labels=labels,
                         dimension=3, description="Spine (vertebrae) segmentation, small CPU model",
                         load_strict=True, **kwargs)
        self.spec = spec

    def pre_transforms(self, data=None) -> Sequence[Callable]:
        lo, hi = self.spec.hu_range
        return [
            LoadImaged(keys="image", reader="ITKReader"),
            EnsureTyped(keys="image", device=data.get("device") if data else None),
            EnsureChannelFirstd(keys="image"),
            Spacingd(keys="image", pixdim=self.spec.spacing),
            ScaleIntensityRanged(keys="image", a_min=lo, a_max=hi, b_min=-1.0, b_max=1.0, clip=True),
        ]

    def inferer(self, data=None) -> Inferer:
        return SlidingWindowInferer(roi_size=self.spec.roi, sw_batch_size=2, overlap=0.25,
                                    padding_mode="replicate")

    def post_transforms(self, data=None) -> Sequence[Callable]:
        return [
            EnsureTyped(keys="pred", device=data.get("device") if data else None),
            Activationsd(keys="pred", softmax=True),
            AsDiscreted(keys="pred", argmax=True),
            Restored(keys="pred", ref_image="image"),
        ]
