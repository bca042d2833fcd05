"""retrain: the gold standard, training from scratch on the retain set, through the method interface.

The recipe defaults to the embedded default's (Adam, lr 1e-3, 60 epochs, batch 64); with ``budget=1`` it is a
complete retraining. A smaller budget stops it early (a "partial retrain" reference).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from ..context import RunContext
from ..training import TrainConfig
from . import Budget, EpochCallback, Splits, UnlearnResult, register_method
from ._loop import reinitialise, working_copy
from .gd import descend, validate_sgd_fields


@dataclass(frozen=True)
class RetrainConfig:
    lr: float = TrainConfig.lr
    optimizer: str = TrainConfig.optimizer
    momentum: float = TrainConfig.momentum
    weight_decay: float = TrainConfig.weight_decay
    epochs: int = TrainConfig.epochs
    batch_size: int = TrainConfig.batch_size

    def __post_init__(self) -> None:
        validate_sgd_fields(self)


def search_space(trial: Any) -> dict[str, Any]:
    return {}


@register_method("retrain", RetrainConfig, search_space, default_budget=1.0)
def retrain(
    model: nn.Module,
    splits: Splits,
    cfg: RetrainConfig,
    budget: Budget,
    ctx: RunContext,
    on_epoch: EpochCallback | None = None,
) -> UnlearnResult:
    fresh = working_copy(model, ctx)
    reinitialise(fresh, ctx.seed)
    return descend(fresh, splits, cfg, budget, ctx, on_epoch)
