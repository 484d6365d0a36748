"""Train a spine model on a data set folder; evaluate it on the held-out split.

Runs as the ``local`` backend (``python -m spine_model.train --data D --model-dir M``)
and as a SageMaker script-mode entry point: the data set comes from the
``training`` channel (``SM_CHANNEL_TRAINING``), the weights go to ``SM_MODEL_DIR``
(SageMaker packs it into ``model.tar.gz``), hyperparameters are flags.

Writes ``model.pt`` (MONAI Label's layout) and ``metrics.json`` (held-out Dice,
loss per epoch, seconds) into the model folder and prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from monai.losses import DiceCELoss

from . import checkpoint
from .data import Case, load_split, read_manifest
from .metrics import evaluate
from .specs import ModelSpec, spec

#: Where a SageMaker training container finds the job's hyperparameters.
HYPERPARAMETERS = Path("/opt/ml/input/config/hyperparameters.json")


def random_crop(case: Case, roi: tuple[int, ...],
                rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One ``roi``-sized patch of image and label (padded where the volume is smaller)."""
    pad: list[int] = []
    for n, r in zip(reversed(case.image.shape[1:]), reversed(roi), strict=True):
        pad += [0, max(0, r - n)]
    image = F.pad(case.image, pad, value=-1.0)
    label = F.pad(case.label, pad, value=0)
    start = [int(rng.integers(0, n - r + 1)) for n, r in zip(image.shape[1:], roi, strict=True)]
    sl = tuple(slice(s, s + r) for s, r in zip(start, roi, strict=True))
    return image[(slice(None), *sl)], label[(slice(None), *sl)]


def foreground_crop(case: Case, roi: tuple[int, ...], rng: np.random.Generator,
                    p_foreground: float = 0.7) -> tuple[torch.Tensor, torch.Tensor]:
    """A random patch, centred on a labelled voxel with probability ``p_foreground``."""
    fg = torch.nonzero(case.label[0])
    if len(fg) and rng.random() < p_foreground:
        centre = fg[int(rng.integers(0, len(fg)))].tolist()
        shape = case.image.shape[1:]
        lo = [max(0, min(c - r // 2, n - r)) for c, r, n in zip(centre, roi, shape, strict=True)]
        sl = tuple(slice(s, s + r) for s, r in zip(lo, roi, strict=True))
        sub = Case(case.id, case.image[(slice(None), *sl)], case.label[(slice(None), *sl)])
        return random_crop(sub, roi, rng)
    return random_crop(case, roi, rng)


def train(cases: list[Case], model: ModelSpec, *, epochs: int, init: Path | None, seed: int,
          lr: float, samples: int) -> tuple[torch.nn.Module, list[float]]:
    """Train a network (from ``init`` weights if given); return it and the loss of each epoch."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = checkpoint.load(init, model) if init else model.network()
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-5)
    losses = []
    for _ in range(epochs):
        net.train()
        total = 0.0
        for case in cases:
            crops = [foreground_crop(case, model.roi, rng) for _ in range(samples)]
            images = torch.stack([c[0] for c in crops])
            labels = torch.stack([c[1] for c in crops])
            optimizer.zero_grad()
            loss = loss_fn(net(images), labels)
            loss.backward()
            optimizer.step()
            total += loss.item()
        losses.append(round(total / max(1, len(cases)), 4))
    return net, losses


def sagemaker_hyperparameters(path: Path = HYPERPARAMETERS) -> list[str]:
    """SageMaker's hyperparameters (``{"epochs": "20"}``) as flags; none outside SageMaker."""
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [arg for k, v in sorted(values.items()) for arg in (f"--{k.replace('_', '-')}", str(v))]


def main(argv: list[str] | None = None) -> int:
    """Command line: train, evaluate, write ``model.pt`` and ``metrics.json``."""
    p = argparse.ArgumentParser(prog="python -m spine_model.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path(os.environ.get("SM_CHANNEL_TRAINING", "data")),
                   help="data set folder (default: $SM_CHANNEL_TRAINING)")
    p.add_argument("--model-dir", type=Path, default=Path(os.environ.get("SM_MODEL_DIR", "model")),
                   help="where model.pt and metrics.json go (default: $SM_MODEL_DIR)")
    p.add_argument("--model", default="", help="model spec (default: the manifest's)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--samples", type=int, default=4, help="patches per case per step")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", type=Path, default=None, help="start from these weights")
    p.add_argument("command", nargs="?", choices=["train"], help="SageMaker runs a container as `train`")
    args = p.parse_args([*sagemaker_hyperparameters(), *(sys.argv[1:] if argv is None else argv)])

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    manifest = read_manifest(args.data)
    model = spec(args.model or manifest.get("model") or "spine_cpu")
    cases = load_split(args.data, "train", model)
    if not cases:
        raise SystemExit(f"{args.data}: the training split is empty")
    heldout = load_split(args.data, "heldout", model)
    t0 = time.perf_counter()
    net, losses = train(cases, model, epochs=args.epochs, init=args.init, seed=args.seed,
                        lr=args.lr, samples=args.samples)
    seconds = time.perf_counter() - t0
    metrics = {"model": model.name, "epochs": args.epochs, "train_cases": len(cases),
               "loss": losses, "train_seconds": round(seconds, 2), **evaluate(net, heldout, model)}
    sha = checkpoint.save(net, model, args.model_dir / "model.pt", dice=metrics["dice"])
    metrics["sha256"] = sha
    (args.model_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
