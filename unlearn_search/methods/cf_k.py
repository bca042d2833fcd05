"""CF-k: freeze all but the last k blocks and fine-tune those on the retain set (PAPER.md section 4).

Algorithm: on a working copy, every parameter outside the last ``k`` blocks of `model_blocks` is frozen
(``requires_grad=False``; frozen blocks also stay in eval mode, see `OnlyLastKTrainable`), and the last k
blocks, starting from the poisoned weights (no re-initialisation: that is EU-k), are trained by
cross-entropy descent on the retain set (`descend`, whose optimizer covers `trainable(model)` only, so
weight decay and momentum cannot move frozen parameters). The returned model has its ``requires_grad``
flags restored.

Reference defaults (SCRUB code / CMU benchmark, REFERENCES.md): k = 1 (the last block, ResNet layer4), SGD
lr 0.01, momentum 0.9, weight decay 5e-4, 10 epochs, batch 64: the same fields, defaults, checks and search
space as EU-k (`EUkConfig`). ``k`` is checked against the model's depth when the method runs, before any
training.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..context import RunContext
from . import Budget, EpochCallback, Splits, UnlearnResult, register_method
from ._loop import OnlyLastKTrainable, working_copy
from .eu_k import EUkConfig, check_k, search_space
from .gd import descend


@dataclass(frozen=True)
class CFkConfig(EUkConfig):
    """CF-k's own config type; fields, defaults and validation as `EUkConfig`."""


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
    with OnlyLastKTrainable(work, cfg.k):  # raises UsageError for k beyond the model's depth
        result = descend(work, splits, cfg, budget, ctx, on_epoch)
    result.info["k"] = float(cfg.k)
    return result
