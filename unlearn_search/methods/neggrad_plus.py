"""NegGrad+: descend on retain while ascending on forget (Kurmanji et al. 2023; docs/paper.md section 4).

Algorithm, as the SCRUB reference code runs it (small scale, the setting of its beta = 0.95): each step takes one
retain batch and one forget batch and minimises

    beta·(CE(retain batch) + (l2_weight/2)·Σ‖θ − θ₀‖²) − (1−beta)·CE(forget batch),

where θ₀ are the starting (poisoned) weights: the retain part carries an L2 pull back towards them (the reference
names its coefficient ``weight_decay`` and takes it from the training command line: 0.1 at small scale), summed
over every trainable parameter and weighted by beta with the retain loss. The model runs in eval mode while it
unlearns (``eval_mode``, the reference's ``model.eval()``): BatchNorm uses and keeps its running statistics and
dropout is off. An epoch is one shuffled pass over the retain set; the forget batches are zipped alongside as
``zip(retain_loader, cycle(forget_loader))`` yields them: the cycle is made anew at each epoch, its first pass over
the forget set is freshly shuffled, and when the forget set runs out within the epoch the *same* batches are
replayed in the same order (``itertools.cycle`` caches the first pass; nothing is reshuffled until the next epoch).
A step costs (retain batch + forget batch) examples, charged before it runs, so the budget is overrun by less than
one step. An empty forget set leaves the forget term out.

Reference defaults (SCRUB code, docs/references.md): beta = 0.95 (small scale; the reference code calls it ``alpha``,
we follow docs/paper.md's β), plain SGD (no momentum, no weight decay) at lr 0.01, 10 epochs, l2_weight 0.1,
eval mode. The reference's large-scale runs use another loop (train mode, no L2 term, beta 0.9999): set
``eval_mode=False, l2_weight=0, beta=0.9999`` for it (docs/methods.md). Retain batch 64 and forget batch 32 are
our choices (the small-scale reference used 128 and 64). With ``l2_weight=0``, ``eval_mode=False`` and
``beta=1`` it is GD exactly (the retain order uses GD's shuffle generator).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..context import RunContext
from ..errors import UsageError, check_range
from ..training import iterate_batches, make_optimizer
from . import Budget, EpochCallback, Splits, UnlearnResult, register_method
from ._loop import trainable, working_copy
from .gd import validate_sgd_fields

#: Generator offsets: retain order as GD's (`gd.descend` uses 2), forget order separate.
RETAIN_SHUFFLE_OFFSET = 2
FORGET_SHUFFLE_OFFSET = 5


@dataclass(frozen=True)
class NegGradPlusConfig:
    beta: float = 0.95  # weight of the retain loss (and its L2 pull); 1 - beta weights the (negated) forget loss
    lr: float = 0.01
    optimizer: str = "sgd"
    momentum: float = 0.0  # the reference's plain SGD
    weight_decay: float = 0.0
    epochs: int = 10
    batch_size: int = 64  # retain batch
    forget_batch_size: int = 32
    l2_weight: float = 0.1  # (l2_weight/2)·Σ‖θ − θ₀‖² joins the retain loss: a pull back to the starting weights
    eval_mode: bool = True  # unlearn in eval mode (BatchNorm statistics kept, dropout off), as the reference

    def __post_init__(self) -> None:
        validate_sgd_fields(self)
        check_range("beta", self.beta, low=0, high=1)
        check_range("forget_batch_size", self.forget_batch_size, low=1)
        check_range("l2_weight", self.l2_weight, low=0)
        if not isinstance(self.eval_mode, bool):
            raise UsageError(f"eval_mode={self.eval_mode!r} is not a boolean; valid: true, false")


def search_space(trial: Any) -> dict[str, Any]:
    return {
        "optimizer": trial.suggest_categorical("optimizer", ["sgd", "adam"]),
        "lr": trial.suggest_float("lr", 1e-5, 1e-1, log=True),
        "beta": trial.suggest_float("beta", 0.5, 0.9999),
        "epochs": 0,  # the searched budget decides how long it runs
    }


def _cycle(
    n: int, batch_size: int, gen: torch.Generator, device: torch.device
) -> Iterator[torch.Tensor | None]:
    """Forget index batches forever, as ``itertools.cycle(forget_loader)``: one shuffled pass, then that pass's
    batches replayed in the same order; ``None`` forever when the set is empty. Made anew at each epoch."""
    if n == 0:
        while True:
            yield None
    yield from itertools.cycle(iterate_batches(n, batch_size, gen, device=device))


def l2_pull(params: list[nn.Parameter], anchors: list[torch.Tensor]) -> torch.Tensor:
    """``Σ‖θ − θ₀‖²`` over ``params`` (θ) and their starting values ``anchors`` (θ₀); its gradient is 2(θ − θ₀)."""
    return torch.stack([(p - a).square().sum() for p, a in zip(params, anchors, strict=True)]).sum()


@register_method("neggrad_plus", NegGradPlusConfig, search_space)
def neggrad_plus(
    model: nn.Module,
    splits: Splits,
    cfg: NegGradPlusConfig,
    budget: Budget,
    ctx: RunContext,
    on_epoch: EpochCallback | None = None,
) -> UnlearnResult:
    work = working_copy(model, ctx)
    params = trainable(work)
    anchors = [p.detach().clone() for p in params]  # θ₀: the starting (poisoned) weights
    opt = make_optimizer(params, cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    xr, yr = splits.x_retain.to(ctx.device), splits.y_retain.to(ctx.device)
    xf, yf = splits.x_forget.to(ctx.device), splits.y_forget.to(ctx.device)
    meter = budget.meter()
    rgen, fgen = ctx.generator(offset=RETAIN_SHUFFLE_OFFSET), ctx.generator(offset=FORGET_SHUFFLE_OFFSET)

    epoch, steps, exhausted = 0, 0, False
    while not exhausted and (cfg.epochs == 0 or epoch < cfg.epochs):
        work.train(not cfg.eval_mode)
        forget_batches = _cycle(len(xf), cfg.forget_batch_size, fgen, ctx.device)  # a new cycle per epoch
        sums = torch.zeros(4, device=ctx.device)  # objective, retain CE, forget CE, L2; summed on the device
        batches = 0
        retain_batches = iterate_batches(len(xr), cfg.batch_size, rgen, device=ctx.device)
        for ridx, fidx in zip(retain_batches, forget_batches, strict=False):
            cost = len(ridx) + (0 if fidx is None else len(fidx))
            if not meter.can_afford(cost):
                exhausted = True
                break
            meter.used += cost
            ridx = ridx.to(ctx.device)
            opt.zero_grad(set_to_none=True)
            retain_ce = loss_fn(work(xr[ridx]), yr[ridx])
            if cfg.l2_weight > 0:
                l2 = cfg.l2_weight / 2 * l2_pull(params, anchors)
                retain_term = retain_ce + l2
            else:
                l2 = torch.zeros((), device=ctx.device)
                retain_term = retain_ce
            if fidx is None:
                forget_ce = torch.zeros((), device=ctx.device)
                loss = cfg.beta * retain_term
            else:
                fidx = fidx.to(ctx.device)
                forget_ce = loss_fn(work(xf[fidx]), yf[fidx])
                loss = cfg.beta * retain_term - (1 - cfg.beta) * forget_ce
            loss.backward()
            opt.step()
            sums += torch.stack([loss, retain_ce, forget_ce, l2]).detach()
            batches += 1
            steps += 1
        if batches:
            epoch += 1
            if on_epoch is not None:
                obj, rce, fce, l2v = (float(v) / batches for v in sums)
                on_epoch(epoch - 1, work, {"loss": obj, "retain_ce": rce, "forget_ce": fce, "l2": l2v})
        if batches == 0:
            break
    work.eval()
    return UnlearnResult(work, meter.used, {"epochs": float(epoch), "steps": float(steps)})
