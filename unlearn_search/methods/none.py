"""none: no unlearning, the poisoned model itself (a reference row; consumes no compute)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from ..context import RunContext
from . import Budget, EpochCallback, Splits, UnlearnResult, register_method
from ._loop import working_copy


@dataclass(frozen=True)
class NoneConfig:
    pass


def search_space(trial: Any) -> dict[str, Any]:
    return {}


@register_method("none", NoneConfig, search_space)
def none(
    model: nn.Module,
    splits: Splits,
    cfg: NoneConfig,
    budget: Budget,
    ctx: RunContext,
    on_epoch: EpochCallback | None = None,
) -> UnlearnResult:
    return UnlearnResult(working_copy(model, ctx).eval(), 0.0, {"epochs": 0.0})
