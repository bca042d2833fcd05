"""The training recipe: plain supervised training on in-memory tensors, with compute accounting.

Used for the poisoned model, the retrained reference and, through `make_optimizer` and `iterate_batches`, by the
unlearning methods, so that everything shares one notion of an epoch and of a unit of compute.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .compute import ComputeMeter
from .context import RunContext
from .errors import check_choice, check_range

log = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class TrainConfig:
    """How the poisoned and retrained models are trained (the recipe that retraining cost is measured in)."""

    epochs: int = 60
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        check_range("epochs", self.epochs, low=1)
        check_range("batch_size", self.batch_size, low=1)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_range("lr", self.lr, low=0, low_open=True)
        check_range("momentum", self.momentum, low=0, high=1, high_open=True)
        check_range("weight_decay", self.weight_decay, low=0)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def make_optimizer(
    params: list[nn.Parameter] | Iterator[nn.Parameter],
    name: str,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    check_choice("optimizer", name, OPTIMIZERS)
    params = list(params)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def iterate_batches(
    n: int, batch_size: int, generator: torch.Generator, shuffle: bool = True
) -> Iterator[torch.Tensor]:
    """Index batches over ``range(n)``, reshuffled by ``generator`` on each call (one call = one epoch)."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    yield from order.split(batch_size)


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
    ctx: RunContext,
    meter: ComputeMeter | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
) -> nn.Module:
    """Train ``model`` in place on ``(x, y)`` with ``cfg``; returns it. Charges each batch to ``meter``."""
    meter = meter if meter is not None else ComputeMeter()
    device = ctx.device
    model.to(device)
    x, y = x.to(device), y.to(device)
    opt = make_optimizer(model.parameters(), cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    gen = ctx.generator(offset=1)
    for epoch in range(cfg.epochs):
        model.train()
        total = torch.zeros((), device=device)
        for idx in iterate_batches(len(x), cfg.batch_size, gen):
            idx = idx.to(device)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            meter.charge_train(len(idx))
            total += loss.detach() * len(idx)
        if on_epoch is not None:
            on_epoch(epoch, float(total) / len(x))  # one host sync per epoch, not per batch
    model.eval()
    return model


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, device: torch.device, batch_size: int = 1024) -> torch.Tensor:
    """Eval-mode logits for ``x`` (on CPU), batched."""
    model.eval()
    model.to(device)
    outs = [model(xb.to(device)).float().cpu() for xb in x.split(batch_size)]
    return torch.cat(outs) if outs else torch.empty(0)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> float:
    if len(x) == 0:
        return float("nan")
    return float((predict_logits(model, x, device).argmax(1) == y.cpu()).float().mean())
