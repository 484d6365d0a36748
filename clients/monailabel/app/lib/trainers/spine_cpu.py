"""Training of ``spine_cpu`` inside MONAI Label (the ``monailabel`` backend of ``spine_training``)."""

import torch
from monai.inferers import SlidingWindowInferer
from monai.losses import DiceCELoss
from monai.transforms import (
    Activationsd,
    AsDiscreted,
    EnsureChannelFirstd,
    EnsureTyped,
    Lambdad,
    LoadImaged,
    RandCropByPosNegLabeld,
    ScaleIntensityRanged,
    SelectItemsd,
    Spacingd,
    SpatialPadd,
)

from monailabel.tasks.train.basic_train import BasicTrainTask, Context


def _any_vertebra(label):
    # SEGs made for localization_spine carry one segment per vertebra: every one is "spine" here
    return (label > 0).to(label.dtype) if isinstance(label, torch.Tensor) else (label > 0).astype(label.dtype)


class SpineCpuTrain(BasicTrainTask):
    def __init__(self, model_dir, network, spec, description="Train spine_cpu", **kwargs):
        self._network = network
        self.spec = spec
        super().__init__(model_dir, description, **kwargs)

    def network(self, context: Context):
        return self._network

    def optimizer(self, context: Context):
        return torch.optim.AdamW(context.network.parameters(), lr=2e-3, weight_decay=1e-5)

    def loss_function(self, context: Context):
        return DiceCELoss(to_onehot_y=True, softmax=True)

    def lr_scheduler_handler(self, context: Context):
        return None

    def train_data_loader(self, context, num_workers=0, shuffle=False):
        return super().train_data_loader(context, num_workers, True)

    def _load(self, context):
        lo, hi = self.spec.hu_range
        return [
            LoadImaged(keys=("image", "label"), reader="ITKReader"),
            EnsureChannelFirstd(keys=("image", "label")),
            EnsureTyped(keys=("image", "label"), device=context.device),
            Lambdad(keys="label", func=_any_vertebra),
            Spacingd(keys=("image", "label"), pixdim=self.spec.spacing, mode=("bilinear", "nearest")),
            ScaleIntensityRanged(keys="image", a_min=lo, a_max=hi, b_min=-1.0, b_max=1.0, clip=True),
        ]

    def train_pre_transforms(self, context: Context):
        return [
            *self._load(context),
            SpatialPadd(keys=("image", "label"), spatial_size=self.spec.roi),
            RandCropByPosNegLabeld(keys=("image", "label"), label_key="label", spatial_size=self.spec.roi,
                                   pos=7, neg=3, num_samples=2),
            SelectItemsd(keys=("image", "label")),
        ]

    def train_post_transforms(self, context: Context):
        return [
            EnsureTyped(keys="pred", device=context.device),
            Activationsd(keys="pred", softmax=True),
            AsDiscreted(keys=("pred", "label"), argmax=(True, False), to_onehot=2),
        ]

    def val_pre_transforms(self, context: Context):
        return [*self._load(context), SelectItemsd(keys=("image", "label"))]

    def val_inferer(self, context: Context):
        return SlidingWindowInferer(roi_size=self.spec.roi, sw_batch_size=2, overlap=0.25,
                                    padding_mode="replicate")
