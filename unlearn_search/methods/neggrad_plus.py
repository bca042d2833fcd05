"""NegGrad+: descend on retain while ascending on forget (Kurmanji et al. 2023; PAPER.md section 4).

Algorithm: each step takes one retain batch and one forget batch and minimises
``beta·CE(retain batch) − (1−beta)·CE(forget batch)``. An epoch is one shuffled pass over the retain set;
the forget batches are zipped alongside from a cycled forget loader (when the forget set runs out it is
reshuffled and starts again; the cycle restarts at each epoch, as ``zip(retain_loader, cycle(forget_loader))``
in the reference does). A step costs (retain batch + forget batch) examples, charged before it runs, so the
budget is overrun by less than one step. An empty forget set leaves the forget term out.

Reference defaults (SCRUB code, REFERENCES.md): beta = 0.95 (small scale; 0.9999 at large scale; the
reference code calls it ``alpha``, we follow PAPER.md's β), SGD lr 0.01, 10 epochs. Momentum 0.9, no weight
decay, retain batch 64 and forget batch 32 (the SCRUB large-scale forget batch) are our choices.
The retain order uses GD's shuffle generator, so ``beta=1`` with the same optimizer settings reproduces GD
exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..context import RunContext
from ..errors import check_range
from ..training import iterate_batches, make_optimizer
from . import Budget, EpochCallback, Splits, UnlearnResult, register_method
from ._loop import trainable, working_copy
from .gd import validate_sgd_fields

#: Generator offsets: retain order as GD's (`gd.descend` uses 2), forget order separate.
RETAIN_SHUFFLE_OFFSET = 2
FORGET_SHUFFLE_OFFSET = 5


@dataclass(frozen=True)
class NegGradPlusConfig:
    beta: float = 0.95  # weight of the retain loss; 1 - beta weights the (negated) forget loss
    lr: float = 0.01
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    epochs: int = 10
    batch_size: int = 64  # retain batch
    forget_batch_size: int = 32

    def __post_init__(self) -> None:
        validate_sgd_fields(self)
        check_range("beta", self.beta, low=0, high=1)
        check_range("forget_batch_size", self.forget_batch_size, low=1)


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
    """Forget index batches forever, reshuffled at each pass; ``None`` forever when the set is empty."""
    while True:
        if n == 0:
            yield None
        else:
            yield from iterate_batches(n, batch_size, gen, device=device)


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
    opt = make_optimizer(trainable(work), cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    xr, yr = splits.x_retain.to(ctx.device), splits.y_retain.to(ctx.device)
    xf, yf = splits.x_forget.to(ctx.device), splits.y_forget.to(ctx.device)
    meter = budget.meter()
    rgen, fgen = ctx.generator(offset=RETAIN_SHUFFLE_OFFSET), ctx.generator(offset=FORGET_SHUFFLE_OFFSET)

    epoch, steps, exhausted = 0, 0, False
    while not exhausted and (cfg.epochs == 0 or epoch < cfg.epochs):
        work.train()
        forget_batches = _cycle(len(xf), cfg.forget_batch_size, fgen, ctx.device)
        sums = torch.zeros(3, device=ctx.device)  # objective, retain CE, forget CE; summed on the device
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
            if fidx is None:
                forget_ce = torch.zeros((), device=ctx.device)
                loss = cfg.beta * retain_ce
            else:
                fidx = fidx.to(ctx.device)
                forget_ce = loss_fn(work(xf[fidx]), yf[fidx])
                loss = cfg.beta * retain_ce - (1 - cfg.beta) * forget_ce
            loss.backward()
            opt.step()
            sums += torch.stack([loss, retain_ce, forget_ce]).detach()
            batches += 1
            steps += 1
        if batches:
            epoch += 1
            if on_epoch is not None:
                obj, rce, fce = (float(v) / batches for v in sums)
                on_epoch(epoch - 1, work, {"loss": obj, "retain_ce": rce, "forget_ce": fce})
        if batches == 0:
            break
    work.eval()
    return UnlearnResult(work, meter.used, {"epochs": float(epoch), "steps": float(steps)})
