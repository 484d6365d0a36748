"""Dice of a model on cases: sliding-window inference at the model's spacing."""

from __future__ import annotations

import torch
from monai.inferers import sliding_window_inference

from .data import Case
from .specs import ModelSpec


def predict(net: torch.nn.Module, image: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """The label map (X, Y, Z) of one preprocessed (1, X, Y, Z) image."""
    net.eval()
    with torch.no_grad():
        logits = sliding_window_inference(image[None], roi_size=spec.roi, sw_batch_size=2,
                                          predictor=net, overlap=0.25, padding_mode="replicate")
    assert isinstance(logits, torch.Tensor)
    return logits[0].argmax(0)


def dice(pred: torch.Tensor, truth: torch.Tensor, labels: list[int]) -> float:
    """Mean Dice over the labels present in either map (1.0 when none is)."""
    scores = []
    for value in labels:
        p, t = pred == value, truth == value
        total = int(p.sum() + t.sum())
        if total:
            scores.append(2.0 * int((p & t).sum()) / total)
    return float(sum(scores) / len(scores)) if scores else 1.0


def evaluate(net: torch.nn.Module, cases: list[Case], spec: ModelSpec) -> dict[str, object]:
    """Per-case and mean Dice of ``net`` on ``cases``."""
    labels = sorted(set(spec.labels.values()))
    per_case = {c.id: round(dice(predict(net, c.image, spec), c.label[0], labels), 4) for c in cases}
    mean = sum(per_case.values()) / len(per_case) if per_case else 0.0
    return {"dice": round(mean, 4), "per_case": per_case, "cases": len(per_case)}
