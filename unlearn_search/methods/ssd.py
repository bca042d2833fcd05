"""SSD: Selective Synaptic Dampening (Foster et al. 2024), a one-shot, retraining-free edit of the weights.

Algorithm (docs/paper.md section 4, docs/references.md):

1. diagonal importances, with the model in eval mode: for a set D split into batches B_1..B_m,
   ``imp_D = (1/m) * sum_j (grad_theta mean_{i in B_j} CE(f(x_i), y_i))**2`` (elementwise), i.e. the mean over
   batches of the *squared batch-mean* gradient;
2. ``full`` importance on the whole training set the poisoned model saw, retain ∪ forget (``splits.full()``),
   NOT the retain set alone (a bug that re-implementations shipped); ``forget`` importance on the forget set;
3. every parameter element with ``forget > alpha * full`` is multiplied by
   ``min(dampening * full / forget, 1)`` (exponent 1); every other element is left bit-identical.

Batching, as the authors' code batches (the default): batch size 128 and loaders NOT shuffled; the forget set in
its own order, and the full set fed as the retain set followed by the forget set (a concatenation in that order,
`Splits.full`), so the full pass's first batches hold only retain examples and its last batches only poisons
(one batch may straddle the boundary). The statistic depends on this batching: squared batch means shrink
roughly like 1/batch_size for the noise part of the gradient, and which examples share a batch (all poisons, or
poisons mixed with retain examples) changes each batch mean, so ``alpha`` and ``dampening`` found for one
batching do not transfer to another. ``shuffle=True`` draws both passes' batches shuffled instead (seeded from
the run context, generator offsets `FULL_OFFSET` and `FORGET_OFFSET`), so full-set batches mix retain and forget
examples as a shuffled training loader would; with ``batch_size=64`` that is this project's earlier default,
reproduced exactly. Measured on the embedded default (digits, MLP, Gaussian poisons; alpha = 10, λ = 1, full
budget, seed 0): the authors' batching selects 777 parameter elements and leaves gus_z 5.59 (poisoned model:
5.69); batch 64 shuffled selects 2,040 and leaves gus_z 4.75 (docs/methods.md): batching is part of the method.

Reference defaults (if-loops/selective-synaptic-dampening, ResNet): ``alpha`` ("selection weighting") = 10,
``dampening`` (λ, "dampening constant") = 1, batch size 128, unshuffled; the authors found alpha and λ by an
offline TPE search over alpha ∈ [0.1, 100], λ ∈ [0.1, 5] and report them sensitive, which is the search space
here (the batching is not searched).

Compute: each importance pass is a forward+backward per example, so SSD costs ``n_full + n_forget`` units
(n_full = n_retain + n_forget). SSD is not iterative and a partial importance pass would be a different
estimator, so when the budget cannot afford both passes it does nothing: it returns the unchanged copy with
``compute_used = 0`` and ``info["skipped"] = 1`` (and never calls ``on_epoch``). Otherwise it is one "epoch":
``on_epoch(0, model, ...)`` is called once, after dampening.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..compute import ComputeMeter
from ..context import RunContext
from ..errors import UsageError, check_range
from ..training import iterate_batches
from . import Budget, EpochCallback, Splits, UnlearnResult, register_method
from ._loop import trainable, working_copy

#: Generator offsets (``ctx.generator(offset=...)``) of the batch shuffles of the two importance passes
#: (``shuffle=True`` only).
FULL_OFFSET = 31
FORGET_OFFSET = 32


@dataclass(frozen=True)
class SSDConfig:
    """SSD hyperparameters.

    ``alpha``: selection weighting (select where forget importance > alpha x full importance);
    ``dampening``: λ, the dampening constant (factor min(λ·full/forget, 1));
    ``batch_size``: batch size of both importance passes (the statistic depends on it, see module docstring);
    ``shuffle``: False (the authors'): contiguous batches of the forget set and of retain-then-forget; True:
    seeded shuffled batches (with ``batch_size=64``, this project's earlier default).
    """

    alpha: float = 10.0
    dampening: float = 1.0
    batch_size: int = 128
    shuffle: bool = False

    def __post_init__(self) -> None:
        check_range("alpha", self.alpha, low=0, low_open=True)
        check_range("dampening", self.dampening, low=0, low_open=True)
        check_range("batch_size", self.batch_size, low=1)
        if not isinstance(self.shuffle, bool):
            raise UsageError(f"shuffle={self.shuffle!r} is not a boolean; valid: true, false")


def search_space(trial: Any) -> dict[str, Any]:
    return {
        "alpha": trial.suggest_float("alpha", 0.1, 100.0, log=True),
        "dampening": trial.suggest_float("dampening", 0.1, 5.0),
    }


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits, y)


def importance(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    gen: torch.Generator | None = None,
    meter: ComputeMeter | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = cross_entropy,
    absolute: bool = False,
) -> tuple[list[torch.Tensor], float]:
    """Diagonal importance of ``trainable(model)`` on ``(x, y)``: mean of squared batch-mean gradients.

    The loss is the batch-mean cross-entropy (``loss_fn(logits, y)``: another batch loss, e.g. Potion's label-free
    one; ``absolute``: accumulate |gradient| instead of its square, as Potion does); batches are the contiguous
    slices ``x[0:b], x[b:2b], ...`` in the given order (an unshuffled loader, the authors'), or, with a generator
    ``gen``, come from ``iterate_batches(len(x), batch_size, gen)`` (shuffled).
    The model is evaluated in eval mode (its mode is restored afterwards); its ``.grad`` fields are untouched.
    Each batch is charged to ``meter`` (1 unit per example) before it runs.
    Returns (importances aligned with ``trainable(model)``, mean batch loss).
    """
    params = trainable(model)
    imps = [torch.zeros_like(p) for p in params]
    was_training = model.training
    model.eval()
    total: torch.Tensor | float = 0.0
    batches = 0
    try:
        if gen is None:
            order: Iterator[torch.Tensor] = iter(torch.arange(len(x), device=x.device).split(batch_size))
        else:
            order = iterate_batches(len(x), batch_size, gen, device=x.device)
        for idx in order:
            if meter is not None:
                meter.charge_train(len(idx))
            idx = idx.to(x.device)
            loss = loss_fn(model(x[idx]), y[idx])
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            for imp, g in zip(imps, grads, strict=True):
                if g is not None:
                    imp.add_(g.abs() if absolute else g.square())
            total = total + loss.detach()
            batches += 1
    finally:
        model.train(was_training)
    for imp in imps:
        imp.div_(max(batches, 1))
    return imps, float(total) / max(batches, 1)


@torch.no_grad()
def dampen(
    params: list[nn.Parameter],
    full: list[torch.Tensor],
    forget: list[torch.Tensor],
    alpha: float,
    dampening: float,
) -> int:
    """In place ``p *= min(dampening * full / forget, 1)`` where ``forget > alpha * full``.

    Returns the number of selected elements.
    """
    selected = 0
    for p, f_full, f_forget in zip(params, full, forget, strict=True):
        mask = f_forget > alpha * f_full  # implies f_forget > 0: no division by zero below
        factor = (dampening * f_full[mask] / f_forget[mask]).clamp(max=1.0)
        p[mask] = p[mask] * factor
        selected += int(mask.sum())
    return selected


@register_method("ssd", SSDConfig, search_space)
def ssd(
    model: nn.Module,
    splits: Splits,
    cfg: SSDConfig,
    budget: Budget,
    ctx: RunContext,
    on_epoch: EpochCallback | None = None,
) -> UnlearnResult:
    work = working_copy(model, ctx).eval()
    meter = budget.meter()
    n_full = splits.n_retain + splits.n_forget
    if not meter.can_afford(n_full + splits.n_forget):
        return UnlearnResult(work, 0.0, {"epochs": 0.0, "skipped": 1.0, "selected": 0.0})

    x_full, y_full = (t.to(ctx.device) for t in splits.full())
    x_f, y_f = splits.x_forget.to(ctx.device), splits.y_forget.to(ctx.device)
    bs = cfg.batch_size
    full_gen = ctx.generator(offset=FULL_OFFSET) if cfg.shuffle else None  # None: contiguous, retain then forget
    forget_gen = ctx.generator(offset=FORGET_OFFSET) if cfg.shuffle else None
    full_imp, full_loss = importance(work, x_full, y_full, bs, full_gen, meter)
    forget_imp, forget_loss = importance(work, x_f, y_f, bs, forget_gen, meter)
    params = trainable(work)
    selected = dampen(params, full_imp, forget_imp, cfg.alpha, cfg.dampening)
    fraction = selected / max(sum(p.numel() for p in params), 1)
    if on_epoch is not None:
        on_epoch(0, work, {"loss": full_loss, "forget_loss": forget_loss, "selected_fraction": fraction})
    info = {"epochs": 1.0, "skipped": 0.0, "selected": float(selected), "selected_fraction": fraction}
    return UnlearnResult(work, meter.used, info)
