"""NGD: noisy gradient descent on the retain set (Langevin-style, Chien et al.; docs/paper.md section 4).

Algorithm: GD on the retain set (`gd.descend`: cross-entropy, one optimizer step per retain batch) and, after
every optimizer step, ``θ ← θ + σ·ξ`` with ``ξ ~ N(0, I)`` drawn independently for every trainable parameter
(frozen parameters never move). The noise has standard deviation ``sigma`` per step, independent of ``lr``
(the Langevin scale ``sqrt(2·lr/β)`` is one choice of ``sigma``; the search picks it).

Randomness: the shuffle order comes from the same generator as GD's, the noise from a separate generator on
``ctx.device`` (``ctx`` seed, offset `NOISE_OFFSET`), so ``sigma=0`` gives bit-for-bit the model GD gives with
the same config and seed, and noise draws never perturb the data order.

Defaults: GD's (OPTML fine-tune, docs/references.md: SGD, lr 0.01, momentum 0.9, 10 epochs, batch 64) plus
``sigma=1e-3``. The reference code gives no σ for our setting; 1e-3 is a small perturbation next to an SGD
step of lr 0.01, and the search draws σ log-uniformly in [1e-6, 1e-2]. ``sigma=0`` skips the noise (plain GD).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..context import RunContext
from ..errors import check_range
from . import Budget, EpochCallback, Splits, UnlearnResult, register_method
from ._loop import trainable, working_copy
from .gd import GDConfig, descend
from .gd import search_space as gd_search_space

#: Offset of the noise generator's seed (GD's shuffle uses offset 2).
NOISE_OFFSET = 3


@dataclass(frozen=True)
class NGDConfig(GDConfig):
    """GD's fields and defaults, plus the noise."""

    sigma: float = 1e-3  # std of the Gaussian noise added to each trainable parameter after each step

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("sigma", self.sigma, low=0)


def search_space(trial: Any) -> dict[str, Any]:
    return {**gd_search_space(trial), "sigma": trial.suggest_float("sigma", 1e-6, 1e-2, log=True)}


def noise_generator(ctx: RunContext) -> torch.Generator:
    """The noise generator: on ``ctx.device``, seeded from the run's seed, not the shuffle one."""
    return torch.Generator(device=ctx.device).manual_seed(ctx.child(NOISE_OFFSET).seed)


@register_method("ngd", NGDConfig, search_space)
def ngd(
    model: nn.Module,
    splits: Splits,
    cfg: NGDConfig,
    budget: Budget,
    ctx: RunContext,
    on_epoch: EpochCallback | None = None,
) -> UnlearnResult:
    work = working_copy(model, ctx)
    if cfg.sigma == 0:
        return descend(work, splits, cfg, budget, ctx, on_epoch)
    params = trainable(work)
    gen = noise_generator(ctx)

    @torch.no_grad()
    def add_noise(_: nn.Module) -> None:
        for p in params:
            p.add_(torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype), alpha=cfg.sigma)

    return descend(work, splits, cfg, budget, ctx, on_epoch, after_step=add_noise)
