"""Loss-based membership inference, the paper's foil (PAPER.md section 5, REFERENCES.md).

Members (the forget set) and non-members (the test set) are scored by their per-sample loss, lower loss meaning
"member". ``mia_auc`` is the ROC AUC of that score; ``mia_tpr_at_1fpr`` is the true-positive rate at the threshold
that calls 1% of test points members. An AUC near 0.5 and a TPR near 0.01 read as "forgotten".
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve
from torch import nn


@torch.no_grad()
def per_sample_loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, batch_size: int = 1024
) -> torch.Tensor:
    model.eval()
    model.to(device)
    out = [
        nn.functional.cross_entropy(model(xb.to(device)), yb.to(device), reduction="none").float().cpu()
        for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True)
    ]
    return torch.cat(out) if out else torch.empty(0)


def loss_mia(member_loss: torch.Tensor | np.ndarray, nonmember_loss: torch.Tensor | np.ndarray) -> dict[str, float]:
    """Threshold attack on the loss: ``mia_auc`` and ``mia_tpr_at_1fpr`` (members = positives)."""
    m = np.asarray(member_loss, dtype=np.float64)
    n = np.asarray(nonmember_loss, dtype=np.float64)
    labels = np.r_[np.ones(len(m)), np.zeros(len(n))]
    score = -np.r_[m, n]  # lower loss -> more likely a member
    fpr, tpr, _ = roc_curve(labels, score)
    return {
        "mia_auc": float(roc_auc_score(labels, score)),
        "mia_tpr_at_1fpr": float(np.interp(0.01, fpr, tpr)),
    }
