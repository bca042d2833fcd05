"""CF-k: freeze all but the last k units and fine-tune those on the retain set (docs/paper.md section 4).

Algorithm: on a working copy, every parameter outside the last ``k`` units of the model
(`models.model_units`) is frozen (``requires_grad=False``; frozen blocks also stay in eval mode, see
`OnlyLastKTrainable`), and the last k units, starting from the poisoned weights (no re-initialisation: that
is EU-k), are trained by cross-entropy descent on the retain set (`descend`, whose optimizer covers
`trainable(model)` only, so weight decay and momentum cannot move frozen parameters). The returned model has
its ``requires_grad`` flags restored.

The unit of k, as EU-k's: k = 1 is the last feature stage together with the classifier head. Per model:
``mlp``: the second Linear-ReLU and the Linear head; ``cnn``: the second conv block and the head;
``resnet18_cifar`` and ``timm:resnet18``: layer4 and the head (k = 2 adds layer3, k = 3 adds layer2);
``linear``: no valid k. Valid k: 1..`models.max_k` (units - 1); k = every unit would fine-tune the whole
network (that is GD) and is refused with a `UsageError` naming the valid range, before any training.

Reference defaults (SCRUB code / CMU benchmark, docs/references.md): k = 1, SGD lr 0.01, momentum 0.9, weight
decay 5e-4, 10 epochs, batch 64: the same fields, defaults and search space as EU-k (`EUkConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..context import RunContext
from . import Budget, EpochCallback, Splits, UnlearnResult, register_method
from ._loop import OnlyLastKTrainable, last_k_blocks, working_copy
from .eu_k import EUkConfig, search_space
from .gd import descend


@dataclass(frozen=True)
class CFkConfig(EUkConfig):
    """CF-k's own config type; fields, defaults and validation as `EUkConfig`."""


def check_k(cfg: CFkConfig, model: nn.Module) -> None:
    """k must be in 1..max_k of the model (raises a one-line `UsageError` with the valid range)."""
    last_k_blocks(model, cfg.k, "cf_k")


@register_method("cf_k", CFkConfig, search_space, check=check_k)
def cf_k(
    model: nn.Module,
    splits: Splits,
    cfg: CFkConfig,
    budget: Budget,
    ctx: RunContext,
    on_epoch: EpochCallback | None = None,
) -> UnlearnResult:
    work = working_copy(model, ctx)
    with OnlyLastKTrainable(work, cfg.k, "cf_k"):  # raises UsageError unless 1 <= k <= max_k
        result = descend(work, splits, cfg, budget, ctx, on_epoch)
    result.info["k"] = float(cfg.k)
    return result
