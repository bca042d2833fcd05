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
    device: torch.device | None = None,
) -> tuple[float, int, bool]:
    """One shuffled pass over ``range(n)`` calling ``step(idx)`` per batch while the budget allows.

    ``step`` does the forward/backward/update for the batch and returns the (detached) loss. Each batch is charged
    ``cost_per_example * len(idx)`` units *before* it runs, so consumption never exceeds the limit.
    Returns (mean loss over batches run, batches run, budget exhausted).
    """
    total: torch.Tensor | float = 0.0  # summed on the device: no host sync per batch
    batches, exhausted = 0, False
    for idx in iterate_batches(n, batch_size, gen, device=device):
        cost = cost_per_example * len(idx)
        if not meter.can_afford(cost):
            exhausted = True
            break
        meter.used += cost
        total = total + step(idx).detach()
        batches += 1
    return (float(total) / max(batches, 1), batches, exhausted)


def reinitialise(module: nn.Module, seed: int) -> None:
    """Fresh random weights for every submodule that defines ``reset_parameters`` (seeded; global RNG untouched).

    ``transformers``' ``Conv1D`` (GPT-2's attention and MLP projections) has no ``reset_parameters``: it gets
    GPT-2's own initialisation instead, weight N(0, 0.02²) and zero bias (the ``initializer_range`` default)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in module.modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()
            elif type(m).__name__ == "Conv1D" and type(m).__module__.startswith("transformers"):
                with torch.no_grad():
                    nn.init.normal_(m.get_parameter("weight"), std=0.02)
                    nn.init.zeros_(m.get_parameter("bias"))


#: What k = every unit would make of EU-k and CF-k, and the method to use instead (`last_k_blocks`).
WHOLE_NETWORK = {
    "eu_k": "re-initialises every unit of {model}, which is retraining from scratch (use method 'retrain')",
    "cf_k": "unfreezes every unit of {model}, which is fine-tuning the whole network (use method 'gd', or 'retrain' "
            "to start from scratch)",
}


def last_k_blocks(model: nn.Module, k: int, method: str = "eu_k") -> list[nn.Module]:
    """The modules of the last ``k`` units of ``model`` (`models.last_k_units`; EU-k, CF-k), in forward order.

    Valid: 1 <= k <= `models.max_k` (units - 1: at least one unit stays frozen). Anything else raises a one-line
    `UsageError` naming k, the model and the valid range; k = every unit also says which method that would be.
    """
    from ..errors import UsageError
    from ..models import last_k_units, max_k, model_name, model_units

    name, top, n = model_name(model), max_k(model), len(model_units(model))
    if top < 1:
        raise UsageError(f"{method} does not apply to {name}: it has a single unit (k would re-initialise or unfreeze "
                         f"the whole network; use method 'retrain' or 'gd')")
    if k == n:
        raise UsageError(f"k={k!r} {WHOLE_NETWORK.get(method, WHOLE_NETWORK['eu_k']).format(model=name)}; "
                         f"valid: 1..{top}")
    if not 1 <= k <= top:
        raise UsageError(f"k={k!r} is out of range for {name} ({n} units); valid: 1..{top}")
    return last_k_units(model, k)


class OnlyLastKTrainable:
    """``with OnlyLastKTrainable(model, k) as last:`` only the last ``k`` units of ``model`` train.

    Shared by EU-k and CF-k; a unit is a group of blocks (`models.model_units`: k = 1 is the last feature stage
    with the classifier head). ``k`` is validated on construction (`last_k_blocks`), before anything changes.
    Inside the block every parameter outside the last k units has ``requires_grad=False``, so `trainable`
    (and an optimizer built on it, with its weight decay and momentum) never sees it, and the last k units'
    parameters have ``requires_grad=True``. The frozen blocks are also put in eval mode before each of their
    forwards, so their BatchNorm running statistics stay put and their dropout is off: the frozen part is a
    fixed feature extractor, bit-identical in its whole state. On exit the original ``requires_grad`` flags
    are restored and the hooks removed, so the model trains like any other afterwards.
    """

    def __init__(self, model: nn.Module, k: int, method: str = "eu_k") -> None:
        from ..models import model_blocks

        self.last = last_k_blocks(model, k, method)
        last_ids = {id(b) for b in self.last}
        self.frozen = [b for b in model_blocks(model) if id(b) not in last_ids]
        self.keep = {id(p) for b in self.last for p in b.parameters()}
        self.flags = [(p, p.requires_grad) for p in model.parameters()]
        self.hooks: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> list[nn.Module]:
        for p, _ in self.flags:
            p.requires_grad_(id(p) in self.keep)
        self.hooks = [b.register_forward_pre_hook(_hold_eval) for b in self.frozen]
        return self.last

    def __exit__(self, *exc: object) -> None:
        for h in self.hooks:
            h.remove()
        self.hooks = []
        for p, flag in self.flags:
            p.requires_grad_(flag)


def _hold_eval(module: nn.Module, args: object) -> None:
    module.eval()
