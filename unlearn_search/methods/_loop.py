"""Shared pieces of the methods' training loops: working copy, parameter freezing, budgeted epochs."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from ..compute import ComputeMeter
from ..context import RunContext
from ..training import iterate_batches

#: A step: given index batch ``idx`` (into the set being iterated), compute and return the loss to minimise.
LossFn = Callable[[torch.Tensor], torch.Tensor]


def working_copy(model: nn.Module, ctx: RunContext) -> nn.Module:
    """A deep copy on the run's device, in train mode; the input model is never touched."""
    return copy.deepcopy(model).to(ctx.device).train()


def trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def budgeted_epoch(
    n: int,
    batch_size: int,
    step: Callable[[torch.Tensor], torch.Tensor],
    meter: ComputeMeter,
    gen: torch.Generator,
    cost_per_example: float = 1.0,
) -> tuple[float, int, bool]:
    """One shuffled pass over ``range(n)`` calling ``step(idx)`` per batch while the budget allows.

    ``step`` does the forward/backward/update for the batch and returns the (detached) loss. Each batch is charged
    ``cost_per_example * len(idx)`` units *before* it runs, so consumption never exceeds the limit.
    Returns (mean loss over batches run, batches run, budget exhausted).
    """
    total: torch.Tensor | float = 0.0  # summed on the device: no host sync per batch
    batches, exhausted = 0, False
    for idx in iterate_batches(n, batch_size, gen):
        cost = cost_per_example * len(idx)
        if not meter.can_afford(cost):
            exhausted = True
            break
        meter.used += cost
        total = total + step(idx).detach()
        batches += 1
    return (float(total) / max(batches, 1), batches, exhausted)


def reinitialise(module: nn.Module, seed: int) -> None:
    """Fresh random weights for every submodule that defines ``reset_parameters`` (seeded; global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in module.modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()
