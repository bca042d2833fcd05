"""The Gaussian Unlearning Score (GUS), docs/paper.md section 3.1.

For a poison z with clean input x_z, label y_z and the Gaussian noise xi_z ~ N(0, eps^2 I) that was added to it in
training, the statistic is

    I_z = < -grad_x loss(theta; x_z, y_z), xi_z > / (eps * || grad_x loss(theta; x_z, y_z) ||).

If theta never saw xi_z, xi_z is independent of the gradient and I_z ~ N(0, 1) exactly. Training on x_z + xi_z
lowers the loss along xi_z, so the mean of I_z becomes positive. ``I_indep`` is the same statistic with fresh
noise never used in training: the empirical null.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from statistics import NormalDist

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from .roc import normal_sf, roc_auc

#: One-sided threshold for "detected at 1% false-positive rate" under the N(0, 1) null (= scipy.stats.norm.ppf(0.99),
#: to the last bit; the standard library's, so that this module imports without SciPy: `benchmarks/gpu_check.py`).
Z_99 = NormalDist().inv_cdf(0.99)


def input_gradients(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    batch_size: int = 512,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Per-sample gradients of the cross-entropy loss w.r.t. the inputs, shape like ``x``, on CPU.

    In eval mode each sample's loss depends only on its own input, so the gradient of the *summed* loss w.r.t. the
    batch is exactly the stack of per-sample gradients: one backward per batch instead of one per sample.

    The gradient is computed on a copy of the model in ``dtype`` (float64 by default): on memorised points the
    softmax saturates and float32 gradients lose the direction that GUS measures (on the digits default this
    weakened gus_z by up to a quarter). The model itself is not touched.

    The copy is functional: the model runs in eval mode (its modes restored afterwards) with its parameters and
    buffers cast as ``copy.deepcopy(model).to(device=device, dtype=dtype)`` would cast them (`_cast_state`), which
    computes exactly the same gradients without deep-copying the module on every call (about a third of the cost
    of an evaluation on the default).
    """
    out = []
    with _functional_eval(model, device, dtype) as state:
        for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True):
            xb = xb.to(device=device, dtype=dtype).requires_grad_(True)
            loss = nn.functional.cross_entropy(functional_call(model, state, (xb,)), yb.to(device), reduction="sum")
            (g,) = torch.autograd.grad(loss, xb)
            out.append(g.detach().cpu())
    return torch.cat(out) if out else torch.empty_like(x, dtype=dtype)


def embedding_gradients(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    batch_size: int = 64,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """The text counterpart of `input_gradients`: per-sample gradients of the cross-entropy loss with respect to the
    *clean* input token embeddings of the rows ``x`` (`data.text`; a row's noise is ignored), shape (N, L, D), zero
    at padding positions, on CPU. The model must be a `models.text.TextClassifier`; same float64 functional copy,
    eval mode and one backward per batch as `input_gradients` (a row's loss depends on its own embeddings only)."""
    from ..data.text import split_rows

    out = []
    with _functional_eval(model, device, dtype) as state:
        for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True):
            xb = xb.to(device)
            emb = functional_call(model, state, (xb,), {"return_embeds": True}).detach().requires_grad_(True)
            logits = functional_call(model, state, (xb,), {"embeds": emb})
            loss = nn.functional.cross_entropy(logits, yb.to(device), reduction="sum")
            (g,) = torch.autograd.grad(loss, emb)
            out.append((g * split_rows(xb)[1][:, :, None]).detach().cpu())
    return torch.cat(out)


@contextlib.contextmanager
def _functional_eval(model: nn.Module, device: torch.device, dtype: torch.dtype) -> Iterator[dict[str, torch.Tensor]]:
    """The model in eval mode (its modes restored on exit) and its state cast for `functional_call` (`_cast_state`)."""
    state = _cast_state(model, device, dtype)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield state
    finally:
        for m, training in modes:
            m.training = training


def _cast_state(model: nn.Module, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The model's parameters and buffers, detached, as `nn.Module.to` with ``device`` and ``dtype`` makes them:
    floating-point tensors cast to ``dtype``, the others (e.g. BatchNorm's step counter) only moved."""

    def cast(t: torch.Tensor) -> torch.Tensor:
        t = t.detach()
        return t.to(device=device, dtype=dtype) if t.is_floating_point() or t.is_complex() else t.to(device)

    state = {k: cast(v) for k, v in model.named_parameters()}
    state.update({k: cast(v) for k, v in model.named_buffers()})
    return state


def gus_statistic(grads: torch.Tensor, noise: torch.Tensor, eps: float) -> torch.Tensor:
    """I_z for each row: ``<-g, xi> / (eps * ||g||)``; shape (k,). Rows with a zero gradient give 0 (no evidence)."""
    g = grads.reshape(len(grads), -1).double()
    xi = noise.reshape(len(noise), -1).double()
    norm = g.norm(dim=1)
    stat = -(g * xi).sum(dim=1) / (eps * norm)
    return torch.where(norm > 0, stat, torch.zeros_like(stat))


def gus_summary(i_poison: torch.Tensor | np.ndarray, i_indep: torch.Tensor | np.ndarray) -> dict[str, float]:
    """The reported GUS metrics from the per-poison statistics and the fresh-noise null.

    - ``gus``: mean I_z over poisons; ``gus_se``: its standard error.
    - ``gus_z``: gus * sqrt(k), a z-score under the N(0, 1) null; ``gus_pvalue``: its one-sided p-value.
    - ``gus_tpr_at_1fpr``: fraction of poisons with I_z above the N(0, 1) 99% quantile.
    - ``gus_auc``: ROC AUC separating I_poison (positives) from I_indep (negatives).
    """
    ip = np.asarray(i_poison, dtype=np.float64)
    ii = np.asarray(i_indep, dtype=np.float64)
    k = len(ip)
    if k == 0:
        raise ValueError("GUS needs at least one poison")
    gus = float(ip.mean())
    gus_z = gus * math.sqrt(k)
    return {
        "gus": gus,
        "gus_se": float(ip.std(ddof=1) / math.sqrt(k)) if k > 1 else float("nan"),
        "gus_z": gus_z,
        "gus_pvalue": normal_sf(gus_z),
        "gus_tpr_at_1fpr": float((ip > Z_99).mean()),
        "gus_auc": roc_auc(ip, ii),
        "gus_n": float(k),
    }
