"""MONAI Label radiology app, model ``localization_spine``: training and inference cost at full size.

Standalone (imports torch, monai and numpy only): it rebuilds what the app
(``clients/monailabel/apps/radiology/lib/{configs,trainers,infers}/localization_spine.py``)
does, on synthetic CT volumes of 512×512×150 voxels at 0.68×0.68×2.5 mm:

* the network: ``SegResNet(spatial_dims=3, in_channels=1, out_channels=25`` (24 vertebrae
  plus background), ``init_filters=32, blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1),
  dropout_prob=0.2)``;
* the pre-transforms that cost: ``Spacingd`` to 1.3 mm (bilinear image, nearest label),
  ``ScaleIntensityRanged(-1000..1900 -> 0..1, clip)``, ``GaussianSmoothd(sigma=0.4)``,
  ``ScaleIntensityd(-1..1)``, run on the device as the app does (``EnsureTyped(device=...)``
  comes before ``Spacingd``);
* training as ``BasicTrainTask`` runs it: ``CacheDataset`` (the pre-transforms run once per
  volume, timed apart as the cache fill), then per iteration ``RandSpatialCropd(96³)``, batch
  size 1, ``DiceCELoss(to_onehot_y=True, softmax=True)``, ``AdamW(lr=1e-4, weight_decay=1e-5)``,
  AMP on CUDA (``SupervisedTrainer(amp=True)``: ``autocast`` + ``GradScaler``; on a CPU MONAI's
  CUDA autocast does nothing, so the CPU runs float32), and the train post-transforms
  (softmax, argmax, one-hot) with a mean Dice, as the app's train metric;
* inference as ``BasicInferTask`` runs it: float32 under ``no_grad``,
  ``sliding_window_inference(roi_size=96³, sw_batch_size=2, overlap=0.4, mode="gaussian",
  padding_mode="replicate")`` on the whole resampled volume, then softmax + argmax.

Not timed: image loading (ITK reader), the label-normalising transform, the per-epoch
validation (``val_split`` 0.2: one sliding-window inference per validation volume),
checkpoints, TensorBoard, and the app's infer post-transforms after argmax
(largest connected component, restore to the original grid, writing).

Run: ``python bench/bench_spine_model.py --device cuda --epochs 6 --volumes 16 --out gpu.json``.
Prints one JSON line and writes it to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import monai
import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric
from monai.networks.nets import SegResNet
from monai.networks.utils import one_hot
from monai.transforms import (
    Compose,
    GaussianSmoothd,
    RandSpatialCropd,
    ScaleIntensityd,
    ScaleIntensityRanged,
    Spacingd,
)

N_LABELS = 24  # C1..C7, Th1..Th12, L1..L5 (lib/configs/localization_spine.py)
ROI = (96, 96, 96)
TARGET_SPACING = (1.3, 1.3, 1.3)
SHAPE = (512, 512, 150)
SPACING = (0.68, 0.68, 2.5)


def build_network() -> torch.nn.Module:
    return SegResNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=N_LABELS + 1,
        init_filters=32,
        blocks_down=(1, 2, 2, 4),
        blocks_up=(1, 1, 1),
        dropout_prob=0.2,
    )


def synth_volume(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A CT-like volume in HU and its label: air, an elliptic body, a bright spine cylinder."""
    rng = np.random.default_rng(seed)
    nx, ny, nz = SHAPE
    x = np.arange(nx, dtype=np.float32)[:, None]
    y = np.arange(ny, dtype=np.float32)[None, :]
    body = ((x - 256) / 220) ** 2 + ((y - 256) / 170) ** 2 <= 1.0
    cx, cy = 256 + rng.integers(-10, 10), 330 + rng.integers(-10, 10)
    spine = (x - cx) ** 2 + (y - cy) ** 2 <= 25.0**2
    plane = np.where(spine, 700.0, np.where(body, 40.0, -1000.0)).astype(np.float32)
    image = rng.standard_normal(SHAPE, dtype=np.float32)
    image *= 30.0
    image += plane[:, :, None]
    # 24 vertebrae stacked along z inside the cylinder
    z_label = (np.arange(nz) * N_LABELS // nz + 1).astype(np.float32)
    label = np.where(spine[:, :, None], z_label[None, None, :], np.float32(0.0)).astype(np.float32)
    return image, label


def to_meta(arr: np.ndarray, device: torch.device) -> MetaTensor:
    affine = torch.diag(torch.tensor([*SPACING, 1.0], dtype=torch.float64))
    return MetaTensor(torch.from_numpy(arr)[None].to(device), affine=affine)


def pre_transforms(keys: tuple[str, ...]) -> Compose:
    modes = ("bilinear", "nearest")[: len(keys)]
    return Compose(
        [
            Spacingd(keys=keys, pixdim=TARGET_SPACING, mode=modes),
            ScaleIntensityRanged(keys="image", a_min=-1000, a_max=1900, b_min=0.0, b_max=1.0, clip=True),
            GaussianSmoothd(keys="image", sigma=0.4),
            ScaleIntensityd(keys="image", minv=-1.0, maxv=1.0),
        ]
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_train(args: argparse.Namespace, device: torch.device, net: torch.nn.Module) -> dict:
    pre = pre_transforms(("image", "label"))
    crop = RandSpatialCropd(keys=("image", "label"), roi_size=ROI, random_size=False)
    cache, pre_s = [], []
    for i in range(args.volumes):
        image, label = synth_volume(args.seed + i)
        sync(device)
        t0 = time.perf_counter()
        item = pre({"image": to_meta(image, device), "label": to_meta(label, device)})
        sync(device)
        pre_s.append(time.perf_counter() - t0)
        cache.append({"image": item["image"].as_tensor(), "label": item["label"].as_tensor()})
        del image, label, item
    resampled = list(cache[0]["image"].shape[1:])

    amp = device.type == "cuda"
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=1e-5)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    scaler = torch.amp.GradScaler("cuda") if amp else None
    metric = DiceMetric(include_background=False, reduction="mean")
    crop.set_random_state(args.seed)
    rng = np.random.default_rng(args.seed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    epoch_s, losses = [], []
    net.train()
    for _ in range(args.epochs):
        sync(device)
        t0 = time.perf_counter()
        for j in rng.permutation(len(cache)):
            sample = crop(cache[j])
            x, y = sample["image"][None], sample["label"][None]
            optimizer.zero_grad(set_to_none=False)
            with torch.autocast("cuda", enabled=amp):
                pred = net(x)
                loss = loss_fn(pred, y)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            # train post-transforms + metric: softmax, argmax, one-hot, mean Dice
            with torch.no_grad():
                p = one_hot(torch.softmax(pred.float(), 1).argmax(1, keepdim=True), N_LABELS + 1)
                metric(p, one_hot(y, N_LABELS + 1))
            losses.append(float(loss.detach()))
        metric.aggregate()
        metric.reset()
        sync(device)
        epoch_s.append(time.perf_counter() - t0)
    timed = epoch_s[1:] if len(epoch_s) > 1 else epoch_s
    out = {
        "train_volumes": args.volumes,
        "train_epochs": args.epochs,
        "train_amp": amp,
        "train_batch_size": 1,
        "crop": list(ROI),
        "resampled_shape": resampled,
        "cache_fill_s_per_volume_median": statistics.median(pre_s),
        "epoch_s_all": epoch_s,
        "epoch_s_mean_after_warmup": statistics.mean(timed),
        "iteration_s_mean_after_warmup": statistics.mean(timed) / args.volumes,
        "loss_first_last": [losses[0], losses[-1]],
    }
    if device.type == "cuda":
        out["train_peak_gpu_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    del cache
    return out


def bench_infer(args: argparse.Namespace, device: torch.device, net: torch.nn.Module) -> dict:
    pre = pre_transforms(("image",))
    image, _ = synth_volume(args.seed + 1000)
    net.eval()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    pre_s, sw_s, post_s = [], [], []
    w = args.infer_warmup
    for _ in range(w + args.infer_runs):  # the first w runs are the warm-up
        src = to_meta(image, device)
        sync(device)
        t0 = time.perf_counter()
        x = pre({"image": src})["image"][None]
        sync(device)
        t1 = time.perf_counter()
        with torch.no_grad():
            logits = sliding_window_inference(
                x,
                roi_size=ROI,
                sw_batch_size=2,
                predictor=net,
                overlap=0.4,
                mode="gaussian",
                padding_mode="replicate",
                sw_device=device,
                device=device,
            )
            sync(device)
            t2 = time.perf_counter()
            seg = torch.softmax(logits, 1).argmax(1)
            sync(device)
            t3 = time.perf_counter()
        pre_s.append(t1 - t0)
        sw_s.append(t2 - t1)
        post_s.append(t3 - t2)
        shape = list(x.shape[2:])
        del src, x, logits, seg
    out = {
        "infer_input_shape": shape,
        "infer_runs": args.infer_runs,
        "infer_warmup_runs": w,
        "infer_pre_s_median": statistics.median(pre_s[w:]),
        "infer_sliding_window_s_all": sw_s,
        "infer_sliding_window_s_median": statistics.median(sw_s[w:]),
        "infer_softmax_argmax_s_median": statistics.median(post_s[w:]),
        "infer_total_s_median": statistics.median(
            [a + b + c for a, b, c in zip(pre_s[w:], sw_s[w:], post_s[w:], strict=True)]
        ),
    }
    if device.type == "cuda":
        out["infer_peak_gpu_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    ap.add_argument("--epochs", type=int, default=6, help="the first one is the warm-up")
    ap.add_argument("--volumes", type=int, default=16, help="training volumes (iterations per epoch)")
    ap.add_argument("--infer-runs", type=int, default=3, help="timed inference runs (median reported)")
    ap.add_argument("--infer-warmup", type=int, default=1, help="untimed inference runs before them")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--skip-infer", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.infer_runs < 1:
        ap.error("--infer-runs must be at least 1")

    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    monai.utils.set_determinism(seed=args.seed)
    net = build_network().to(device)
    result: dict = {
        "model": "localization_spine",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "monai": monai.__version__,
        "numpy": np.__version__,
        "out_channels": N_LABELS + 1,
        "parameters": sum(p.numel() for p in net.parameters()),
        "volume_shape": list(SHAPE),
        "volume_spacing_mm": list(SPACING),
        "target_spacing_mm": list(TARGET_SPACING),
    }
    t0 = time.perf_counter()
    if not args.skip_train:
        result.update(bench_train(args, device, net))
    if not args.skip_infer:
        result.update(bench_infer(args, device, net))
    result["wall_s"] = time.perf_counter() - t0
    line = json.dumps(result)
    print(line, flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(line + "\n")


if __name__ == "__main__":
    main()
