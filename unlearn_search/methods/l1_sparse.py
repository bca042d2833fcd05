"""l1-sparse: fine-tune on the retain set with a decaying l1 penalty on the weights (Jia et al., NeurIPS 2023).

Algorithm, as the authors' code runs it (OPTML-Group/Unlearn-Sparse, ``unlearn/FT.py`` ``FT_l1``, the loop of
the README's "l1-sparse" command; the same loop is in OPTML-Group/Unlearn-Saliency): cross-entropy descent on
the retain set, train mode, one shuffled pass per epoch, each step minimising

    CE(retain batch) + alpha_e · ‖θ‖₁,

with ‖θ‖₁ the sum of |θ| over every trainable parameter element (weights, biases, norm affines; not divided by
the batch or the parameter count) and ``alpha_e = alpha · (1 − e / E)`` for the 0-based epoch e of E epochs
(`alpha_at`): alpha in the first epoch, alpha/E in the last, a linear decay. ``epochs=0`` (run until the budget
is spent) takes E = ceil(budget / n_retain), the number of (partly) affordable epochs, so the decay spans the run.
With ``alpha=0`` it is GD exactly: same loop, same shuffle generator (`gd.descend`'s), bit-identical models.

Reference defaults: SGD lr 0.01, momentum 0.9, weight decay 5e-4, 10 epochs (the authors' argument defaults and
README command; their lr schedule, x0.1 at epochs 91 and 136, never fires within 10 epochs). ``alpha``: the code
takes it from the command line (``--alpha ${alpha}`` in the README; the argument's default, 0.2, is a field shared
with other methods, not a value for this penalty, which over all weights would swamp the loss); 5e-4 is our
choice, the value we recall from the paper's appendix, not verifiable from the code. Also ours: batch 64 (theirs
256); no ``no_l1_epochs`` option (theirs defaults to 0, which is what we do: the decay spans every epoch).

Compute: each batch costs its size (the penalty is free), charged before it runs. ``on_epoch`` gets ``loss``
(mean CE + penalty over the epoch's steps), ``retain_ce``, ``alpha`` (that epoch's) and ``l1`` (‖θ‖₁ after it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..context import RunContext
from ..errors import check_range
from ..training import OPTIMIZERS, make_optimizer
from . import Budget, EpochCallback, Splits, UnlearnResult, register_method
from ._loop import budgeted_epoch, trainable, working_copy
from .gd import validate_sgd_fields

#: The retain shuffle's generator offset: GD's (`gd.descend`), so that alpha = 0 is GD bit for bit.
SHUFFLE_OFFSET = 2


@dataclass(frozen=True)
class L1SparseConfig:
    alpha: float = 5e-4  # l1 coefficient in the first epoch; decays linearly to alpha/E in the last
    lr: float = 0.01
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    epochs: int = 10  # 0: until the budget is spent
    batch_size: int = 64

    def __post_init__(self) -> None:
        validate_sgd_fields(self)
        check_range("alpha", self.alpha, low=0)


def search_space(trial: Any) -> dict[str, Any]:
    return {
        "optimizer": trial.suggest_categorical("optimizer", list(OPTIMIZERS)),
        "lr": trial.suggest_float("lr", 1e-4, 1e-1, log=True),
        "alpha": trial.suggest_float("alpha", 1e-6, 1e-2, log=True),
        "epochs": 0,  # the searched budget decides how long it runs
    }


def alpha_at(alpha: float, epoch: int, total: int) -> float:
    """The penalty's coefficient in 0-based ``epoch`` of ``total``: alpha·(1 − epoch/total), 0 past the end."""
    return alpha * (1 - epoch / total) if epoch < total else 0.0


def l1_norm(params: list[nn.Parameter]) -> torch.Tensor:
    """‖θ‖₁ over ``params``: the sum of |θ| over every element."""
    return torch.stack([p.abs().sum() for p in params]).sum()


def planned_epochs(cfg: L1SparseConfig, budget: Budget, n_retain: int) -> int:
    """E of the decay: ``cfg.epochs``, or with ``epochs=0`` the epochs the budget affords, the last maybe partly."""
    if cfg.epochs:
        return cfg.epochs
    return max(1, math.ceil(budget.limit / max(n_retain, 1) - 1e-9))


@register_method("l1_sparse", L1SparseConfig, search_space)
def l1_sparse(
    model: nn.Module,
    splits: Splits,
    cfg: L1SparseConfig,
    budget: Budget,
    ctx: RunContext,
    on_epoch: EpochCallback | None = None,
) -> UnlearnResult:
    work = working_copy(model, ctx)
    params = trainable(work)
    opt = make_optimizer(params, cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)
    x, y = splits.x_retain.to(ctx.device), splits.y_retain.to(ctx.device)
    meter, gen = budget.meter(), ctx.generator(offset=SHUFFLE_OFFSET)
    total = planned_epochs(cfg, budget, len(x))
    coef = 0.0
    ce_sum = torch.zeros((), device=ctx.device)  # the epoch's summed retain CE (no host sync per step)

    def step(idx: torch.Tensor) -> torch.Tensor:
        nonlocal ce_sum
        idx = idx.to(ctx.device)
        opt.zero_grad(set_to_none=True)
        ce = F.cross_entropy(work(x[idx]), y[idx])
        # alpha_e = 0 is the plain GD step: no zero-weighted term in the graph
        loss = ce + coef * l1_norm(params) if coef > 0 else ce
        loss.backward()
        opt.step()
        ce_sum = ce_sum + ce.detach()
        return loss

    epoch = 0
    while cfg.epochs == 0 or epoch < cfg.epochs:
        coef = alpha_at(cfg.alpha, epoch, total)
        ce_sum = torch.zeros((), device=ctx.device)
        work.train()
        loss, batches, exhausted = budgeted_epoch(len(x), cfg.batch_size, step, meter, gen, device=ctx.device)
        if batches:
            epoch += 1
            if on_epoch is not None:
                with torch.no_grad():
                    l1 = float(l1_norm(params))
                values = {"loss": loss, "retain_ce": float(ce_sum) / batches, "l1": l1, "alpha": coef}
                on_epoch(epoch - 1, work, values)
        if exhausted or batches == 0:
            break
    work.eval()
    return UnlearnResult(work, meter.used, {"epochs": float(epoch), "planned_epochs": float(total)})
