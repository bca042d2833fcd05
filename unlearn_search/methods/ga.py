"""GA: gradient ascent on the forget set (docs/paper.md section 4).

Algorithm: per forget batch, one optimizer step that *minimises* ``-CE(model(x_f), y_f)``, i.e. ascends
the forget cross-entropy (the sign is in the loss, so any optimizer and its momentum/weight decay apply
unchanged). One epoch is one shuffled pass over the forget set; each batch costs its size in compute units.

Reference defaults (OPTML GA, docs/references.md): lr 1e-4, 5 epochs, SGD with momentum 0.9. Batch size 32 and no
weight decay are our choices (the reference value depends on the benchmark).

Divergence: ascent on an unbounded loss can blow up. If a batch's loss is non-finite the step is not taken and
the method stops, returning the model as it is with ``info["diverged"] = 1`` (the model may then hold huge
or non-finite weights; callers should score it as a failed run). The same flag is set if a parameter is
non-finite at the end. It never raises for divergence. ``info["diverged"] = 0`` otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..context import RunContext
from ..training import iterate_batches, make_optimizer
from . import Budget, EpochCallback, Splits, UnlearnResult, register_method
from ._loop import trainable, working_copy
from .gd import validate_sgd_fields

#: Offset of the forget-set shuffle generator.
SHUFFLE_OFFSET = 4


@dataclass(frozen=True)
class GAConfig:
    lr: float = 1e-4
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    epochs: int = 5
    batch_size: int = 32

    def __post_init__(self) -> None:
        validate_sgd_fields(self)


def search_space(trial: Any) -> dict[str, Any]:
    return {
        "optimizer": trial.suggest_categorical("optimizer", ["sgd", "adam"]),
        "lr": trial.suggest_float("lr", 1e-6, 1e-2, log=True),
        "epochs": 0,  # the searched budget decides how long it runs
    }


@register_method("ga", GAConfig, search_space)
def ga(
    model: nn.Module,
    splits: Splits,
    cfg: GAConfig,
    budget: Budget,
    ctx: RunContext,
    on_epoch: EpochCallback | None = None,
) -> UnlearnResult:
    work = working_copy(model, ctx)
    params = trainable(work)
    opt = make_optimizer(params, cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    x, y = splits.x_forget.to(ctx.device), splits.y_forget.to(ctx.device)
    meter, gen = budget.meter(), ctx.generator(offset=SHUFFLE_OFFSET)

    epoch, steps, diverged, exhausted = 0, 0, False, False
    while not (diverged or exhausted) and (cfg.epochs == 0 or epoch < cfg.epochs):
        work.train()
        total, batches = 0.0, 0
        for idx in iterate_batches(len(x), cfg.batch_size, gen, device=ctx.device):
            if not meter.can_afford(len(idx)):
                exhausted = True
                break
            meter.used += len(idx)
            idx = idx.to(ctx.device)
            opt.zero_grad(set_to_none=True)
            ce = loss_fn(work(x[idx]), y[idx])
            ce_value = float(ce.detach())  # one host sync per step: divergence must stop the run before the update
            if not math.isfinite(ce_value):
                diverged = True
                break
            (-ce).backward()  # minimise -CE = ascend CE
            opt.step()
            total += ce_value
            batches += 1
            steps += 1
        if diverged:
            break
        if batches:
            epoch += 1
            if on_epoch is not None:
                on_epoch(epoch - 1, work, {"loss": -total / batches, "forget_ce": total / batches})
        if batches == 0:
            break
    with torch.no_grad():
        diverged = diverged or not all(bool(torch.isfinite(p).all()) for p in params)
    work.eval()
    return UnlearnResult(work, meter.used, {"epochs": float(epoch), "steps": float(steps), "diverged": float(diverged)})
