"""GD: keep training the poisoned model on the retain set (fine-tuning; docs/paper.md section 4).

Reference defaults (OPTML fine-tune, docs/references.md): SGD, lr 0.01, momentum 0.9, 10 epochs. Runs until
``epochs`` are done or the budget is spent, whichever comes first (``epochs=0`` means: until the budget is spent).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from ..context import RunContext
from ..errors import check_range
from ..training import OPTIMIZERS, make_optimizer
from . import Budget, EpochCallback, Splits, UnlearnResult, register_method
from ._loop import budgeted_epoch, trainable, working_copy


@dataclass(frozen=True)
class GDConfig:
    lr: float = 0.01
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    epochs: int = 10
    batch_size: int = 64

    def __post_init__(self) -> None:
        validate_sgd_fields(self)


def validate_sgd_fields(cfg: Any) -> None:
    """Checks shared by every config with lr / optimizer / momentum / weight_decay / epochs / batch_size."""
    from ..errors import check_choice

    check_range("lr", cfg.lr, low=0, low_open=True)
    check_choice("optimizer", cfg.optimizer, OPTIMIZERS)
    check_range("momentum", cfg.momentum, low=0, high=1, high_open=True)
    check_range("weight_decay", cfg.weight_decay, low=0)
    check_range("epochs", cfg.epochs, low=0)
    check_range("batch_size", cfg.batch_size, low=1)


def search_space(trial: Any) -> dict[str, Any]:
    return {
        "optimizer": trial.suggest_categorical("optimizer", ["sgd", "adam"]),
        "lr": trial.suggest_float("lr", 1e-5, 1e-1, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        "epochs": 0,  # the searched budget decides how long it runs
    }


def descend(
    model: nn.Module,
    splits: Splits,
    cfg: Any,
    budget: Budget,
    ctx: RunContext,
    on_epoch: EpochCallback | None,
    after_step: Any = None,
) -> UnlearnResult:
    """Cross-entropy descent on the retain set over ``trainable(model)``; shared by GD, NGD, EU-k and CF-k.

    ``after_step(model)`` runs after each optimizer step (NGD adds its noise there).
    """
    params = trainable(model)
    opt = make_optimizer(params, cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    x, y = splits.x_retain.to(ctx.device), splits.y_retain.to(ctx.device)
    meter, gen = budget.meter(), ctx.generator(offset=2)

    def step(idx: Any) -> Any:
        idx = idx.to(ctx.device)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        if after_step is not None:
            after_step(model)
        return loss

    epoch = 0
    while cfg.epochs == 0 or epoch < cfg.epochs:
        model.train()
        loss, batches, exhausted = budgeted_epoch(len(x), cfg.batch_size, step, meter, gen, device=ctx.device)
        if batches:
            epoch += 1
            if on_epoch is not None:
                on_epoch(epoch - 1, model, {"loss": loss})
        if exhausted or batches == 0:
            break
    model.eval()
    return UnlearnResult(model, meter.used, {"epochs": float(epoch)})


@register_method("gd", GDConfig, search_space)
def gd(
    model: nn.Module,
    splits: Splits,
    cfg: GDConfig,
    budget: Budget,
    ctx: RunContext,
    on_epoch: EpochCallback | None = None,
) -> UnlearnResult:
    return descend(working_copy(model, ctx), splits, cfg, budget, ctx, on_epoch)
