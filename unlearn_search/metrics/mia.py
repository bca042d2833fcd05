"""Loss-based membership inference, the paper's foil (docs/paper.md section 5, docs/references.md).

Members (the forget set) and non-members (the test set) are scored by their per-sample loss, lower loss meaning
"member". ``mia_auc`` is the ROC AUC of that score; ``mia_tpr_at_1fpr`` is the true-positive rate at the threshold
that calls 1% of test points members. An AUC near 0.5 and a TPR near 0.01 read as "forgotten".
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .roc import auc_of_curve, roc_curve


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
    if len(m) == 0 or len(n) == 0:
        return {"mia_auc": float("nan"), "mia_tpr_at_1fpr": float("nan")}
    fpr, tpr = roc_curve(-m, -n)  # lower loss -> more likely a member
    return {
        "mia_auc": auc_of_curve(fpr, tpr),
        "mia_tpr_at_1fpr": float(np.interp(0.01, fpr, tpr)),
    }
