"""Evaluation metrics in plain torch (no sklearn)."""

from __future__ import annotations

import math

import torch


def classification_metrics(pred: torch.Tensor, gold: torch.Tensor, num_classes: int) -> dict[str, float]:
    """accuracy, macro F1 and (multi-class) Matthews correlation from label indices."""
    pred = pred.long().cpu()
    gold = gold.long().cpu()
    cm = torch.zeros((num_classes, num_classes), dtype=torch.float64)  # rows gold, cols pred
    cm.index_put_((gold, pred), torch.ones_like(gold, dtype=torch.float64), accumulate=True)
    n = cm.sum()
    correct = cm.diag().sum()
    tp = cm.diag()
    precision = tp / cm.sum(0).clamp(min=1e-12)
    recall = tp / cm.sum(1).clamp(min=1e-12)
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall), torch.zeros(()))
    present = (cm.sum(0) + cm.sum(1)) > 0  # classes seen in gold or pred
    macro_f1 = float(f1[present].mean()) if bool(present.any()) else 0.0
    # Gorodkin's multi-class MCC (equals the binary MCC for two classes)
    t = cm.sum(1)
    p = cm.sum(0)
    cov_tp = float(correct * n - (t * p).sum())
    cov_pp = float(n * n - (p * p).sum())
    cov_tt = float(n * n - (t * t).sum())
    denom = math.sqrt(cov_pp * cov_tt)
    mcc = cov_tp / denom if denom > 0 else 0.0
    return {"accuracy": float(correct / n) if n > 0 else 0.0, "macro_f1": macro_f1, "matthews_corr": mcc}


def regression_metrics(pred: torch.Tensor, gold: torch.Tensor) -> dict[str, float]:
    pred = pred.double().cpu()
    gold = gold.double().cpu()
    mse = float(((pred - gold) ** 2).mean())
    pc = pred - pred.mean()
    gc = gold - gold.mean()
    denom = float(pc.norm() * gc.norm())
    pearson = float((pc * gc).sum()) / denom if denom > 0 else 0.0
    return {"mse": mse, "pearson": pearson}
