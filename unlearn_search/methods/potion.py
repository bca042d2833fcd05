"""Potion: SSD for partly discovered poisons (Schoepf et al. 2024), label-free importances and PTN search.

The method of "Potion: Towards Poison Unlearning" (Schoepf, Foster, Brintrup 2024; code if-loops/
towards_poison_unlearning, class ``XALFSSD`` in ``src/methods.py`` with ``alfssd_tuning(..., x_D=True)`` and
``ParameterPerturber`` in ``src/utils.py``, driven by ``src/main.py``). It is SSD (`ssd`) changed for the case where
only part of the poisons is known: the forget set holds the *discovered* poisons, the undiscovered ones sit in the
retain set, and nobody knows how many there are. Procedure:

1. importances, model in eval mode, batches of ``batch_size`` (512, the default of the code's ``batch_size`` option)
   drawn shuffled (the code's ``SubsetRandomSampler`` loaders): per batch the loss is the batch mean of ``‖f(x)‖₂``,
   the L2 norm of the logit vector (label-free, no cross-entropy), and the importance of a parameter element is the
   mean over batches of the *absolute* batch gradient, ``imp_D = (1/m) Σ_j |∇θ mean_{i∈B_j} ‖f(x_i)‖₂|``. The
   reference importance is taken on the **retain set** (which holds the undiscovered poisons), not on retain ∪
   forget as in SSD; the forget importance on the forget set. Both are computed once, on the poisoned model;
2. selection weighting α, chosen adaptively: the ratios ``forget / retain`` of every parameter element, with NaN
   (0/0) and ±inf (x/0) dropped, pooled over the whole network; α is their percentile ``P = 100 − ln(1 + 100·s)``
   (numpy's default, linear interpolation). Dampening as in SSD with λ = 1 fixed: every element with ``forget > α ·
   retain`` is multiplied by ``min(retain / forget, 1)``, every other element is left bit-identical (`ssd.dampen`);
3. Poison Trigger Neutralisation (PTN) search over ``s``: start at ``s = (n_forget / (n_forget + n_retain)) /
   start_divisor`` (25), dampen a fresh copy of the poisoned model, measure its accuracy on the forget set (the
   discovered poisons with the labels they were trained with), and stop as soon as it is ``<= rho`` × the poisoned
   model's forget accuracy; otherwise ``s *= step`` (1.1) and retry from the poisoned weights, at most ``max_tries``
   (500) times. Growing ``s`` lowers the percentile, so each try dampens more. When the tries (or the budget) run
   out first, the last try's model is the result, as in the authors' code (its ``best_model`` is the last dampened
   model; ``info["reached"] = 0`` says so).

Defaults are the code's: ``rho`` (ρ, the README's name; the code's ``p_cut`` option) 0.0, the ``opts.py`` default,
so the search stops once every discovered poison is misclassified (the authors' runs sweep ρ ∈ {0, 0.05, 0.1, 0.15,
0.2, 0.25, 0.5, 0.75}, ``CIFAR_ptn_runs.sh``, which is the search space here); ``step`` (s_step) 1.1
(``STEP_MULT``); ``start_divisor`` 25 (``main.py``: s_start = forget share / 25); ``max_tries`` 500 (``MAX_TRY``);
batch 512. ``statistic`` picks the importance: ``l2`` (default; the code's ``XALFSSD``, to our reading the paper's
outlier-resistant method: its runs script puts it first), ``l2_squared`` (the code's ``ALFSSD``, the batch mean of
``‖f(x)‖₂²``, absolute gradient: label-free SSD) or ``ce`` (the code's ``ASSD``, adaptive SSD: batch-mean
cross-entropy, squared gradient, `ssd.importance`); all three use the retain set as reference and the same α rule
and search, as in the code.

Compute: the two importance passes are forward+backward (``n_retain + n_forget`` units); the poisoned model's forget
accuracy and each try's are forward-only passes over the forget set (`FORWARD_ONLY_COST` per example). A method that
cannot afford the importances, the first accuracy and one try does nothing (``info["skipped"] = 1``, ``compute_used
= 0``); otherwise the search stops early when the next try's accuracy pass would overrun. ``on_epoch(0, ...)`` is
called once, with the final model.

Deviations: the authors cache the importances in pickle files in the working directory (we keep them in memory);
their loaders apply CIFAR's training augmentation (random crop and flip) to both importance passes and to the
forget-accuracy check, ours see the data as stored; their batches are shuffled by the global RNG, ours by the run
context's generators (offsets `RETAIN_OFFSET`, `FORGET_OFFSET`); a percentile below 0 (only after about a thousand
tries) would stop our search where numpy would raise in theirs.

The stopping rule assumes that misclassifying the discovered poisons is what removing them means (a trigger with a
target label, as in the paper's backdoor poisons). Poisons that keep their true labels (the Gaussian attack) never
meet it: the search then runs until the tries or the budget end and keeps its last, most dampened, try
(docs/methods.md has the measurements).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..compute import FORWARD_ONLY_COST, ComputeMeter
from ..context import RunContext
from ..errors import UsageError, check_choice, check_range
from . import Budget, EpochCallback, Splits, UnlearnResult, register_method
from ._loop import trainable, working_copy
from .ssd import dampen, importance

#: Generator offsets (``ctx.generator(offset=...)``) of the batch shuffles of the two importance passes.
RETAIN_OFFSET = 41
FORGET_OFFSET = 42

#: The importance statistics: the code's XALFSSD (default), ALFSSD and ASSD.
STATISTICS = ("l2", "l2_squared", "ce")

#: The dampening constant λ of the adaptive methods, fixed in the authors' code.
DAMPENING = 1.0


@dataclass(frozen=True)
class PotionConfig:
    """Potion hyperparameters.

    ``rho``: stop the search once forget accuracy <= rho x the poisoned model's forget accuracy;
    ``step``: s is multiplied by it after each failed try; ``start_divisor``: s starts at the forget share over it;
    ``max_tries``: tries of the search; ``statistic``: importance (l2 = XLF, l2_squared = LF, ce = adaptive SSD);
    ``batch_size``: batch size of the importance passes.
    """

    rho: float = 0.0
    step: float = 1.1
    start_divisor: float = 25.0
    max_tries: int = 500
    statistic: str = "l2"
    batch_size: int = 512

    def __post_init__(self) -> None:
        check_range("rho", self.rho, low=0, high=1)
        check_range("step", self.step, low=1, low_open=True)
        check_range("start_divisor", self.start_divisor, low=0, low_open=True)
        for name in ("max_tries", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise UsageError(f"{name}={value!r} is not an integer; valid: an integer >= 1")
            check_range(name, value, low=1)
        check_choice("statistic", self.statistic, STATISTICS)


def search_space(trial: Any) -> dict[str, Any]:
    return {"rho": trial.suggest_float("rho", 0.0, 0.75)}


def label_free_importance(
    model: nn.Module,
    x: torch.Tensor,
    batch_size: int,
    gen: torch.Generator,
    squared: bool = False,
    meter: ComputeMeter | None = None,
) -> tuple[list[torch.Tensor], float]:
    """Label-free importance of ``trainable(model)`` on ``x``: mean over batches of |batch gradient|.

    The batch loss is the mean over the batch of ``‖f(x_i)‖₂`` (``squared``: ``‖f(x_i)‖₂²``), the L2 norm of each
    example's output vector. Batches come from ``iterate_batches(len(x), batch_size, gen)`` (shuffled). The model is
    evaluated in eval mode (its mode is restored afterwards); its ``.grad`` fields are untouched. Each batch is
    charged to ``meter`` (1 unit per example) before it runs. Returns (importances aligned with
    ``trainable(model)``, mean batch loss). SSD's `ssd.importance` loop with this loss and |gradient|.
    """
    def output_norm(logits: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
        norms = torch.linalg.vector_norm(logits.flatten(1), dim=1)
        return (norms.square() if squared else norms).mean()

    labels = torch.zeros(len(x), dtype=torch.long, device=x.device)  # unused: the loss takes no labels
    return importance(model, x, labels, batch_size, gen, meter, loss_fn=output_norm, absolute=True)


def finite_ratios(reference: list[torch.Tensor], forget: list[torch.Tensor]) -> np.ndarray:
    """``forget / reference`` of every element, pooled over all tensors, NaN and ±inf dropped (float32)."""
    parts = []
    for f_ref, f_forget in zip(reference, forget, strict=True):
        r = (f_forget / f_ref).flatten()
        parts.append(r[torch.isfinite(r)].detach().cpu())
    return torch.cat(parts).numpy() if parts else np.zeros(0, dtype=np.float32)


def percentile_of(s: float) -> float:
    """The percentile PTN search takes α at for search value ``s``: ``100 − ln(1 + 100·s)``."""
    return 100.0 - math.log(1.0 + 100.0 * s)


def select_alpha(ratios: np.ndarray, percentile: float) -> float:
    """α: the ``percentile`` of the finite ratios (numpy's linear interpolation); inf when there are none (so
    nothing is selected)."""
    if ratios.size == 0:
        return math.inf
    return float(np.percentile(ratios, percentile))


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    """Fraction of ``x`` that ``model`` (eval mode) classifies as ``y``."""
    model.eval()
    correct = 0
    for idx in torch.arange(len(x), device=x.device).split(batch_size):
        correct += int((model(x[idx]).argmax(dim=1) == y[idx]).sum())
    return correct / max(len(x), 1)


@register_method("potion", PotionConfig, search_space)
def potion(
    model: nn.Module,
    splits: Splits,
    cfg: PotionConfig,
    budget: Budget,
    ctx: RunContext,
    on_epoch: EpochCallback | None = None,
) -> UnlearnResult:
    work = working_copy(model, ctx).eval()
    meter = budget.meter()
    n_r, n_f = splits.n_retain, splits.n_forget
    check_cost = FORWARD_ONLY_COST * n_f
    if n_f == 0 or not meter.can_afford(n_r + n_f + 2 * check_cost):
        return UnlearnResult(work, 0.0, {"epochs": 0.0, "skipped": 1.0, "selected": 0.0, "tries": 0.0})

    x_r, y_r = splits.x_retain.to(ctx.device), splits.y_retain.to(ctx.device)
    x_f, y_f = splits.x_forget.to(ctx.device), splits.y_forget.to(ctx.device)
    bs = cfg.batch_size
    r_gen, f_gen = ctx.generator(offset=RETAIN_OFFSET), ctx.generator(offset=FORGET_OFFSET)
    if cfg.statistic == "ce":
        ref_imp, _ = importance(work, x_r, y_r, bs, r_gen, meter)
        forget_imp, _ = importance(work, x_f, y_f, bs, f_gen, meter)
    else:
        squared = cfg.statistic == "l2_squared"
        ref_imp, _ = label_free_importance(work, x_r, bs, r_gen, squared, meter)
        forget_imp, _ = label_free_importance(work, x_f, bs, f_gen, squared, meter)
    ratios = finite_ratios(ref_imp, forget_imp)

    meter.charge_forward(n_f)
    acc_before = accuracy(work, x_f, y_f, bs)
    target = cfg.rho * acc_before
    params = trainable(work)
    original = [p.detach().clone() for p in params]
    n_params = max(sum(p.numel() for p in params), 1)

    s = (n_f / (n_f + n_r)) / cfg.start_divisor
    tries, reached, selected = 0, False, 0
    alpha, pct, s_used, acc = math.nan, math.nan, math.nan, acc_before
    for _ in range(cfg.max_tries):
        p_next = percentile_of(s)
        if p_next < 0 or not meter.can_afford(check_cost):
            break
        if tries:  # every try dampens the poisoned weights afresh
            with torch.no_grad():
                for p, p0 in zip(params, original, strict=True):
                    p.copy_(p0)
        pct, s_used = p_next, s
        alpha = select_alpha(ratios, pct)
        selected = dampen(params, ref_imp, forget_imp, alpha, DAMPENING)
        meter.charge_forward(n_f)
        acc = accuracy(work, x_f, y_f, bs)
        tries += 1
        if acc <= target:
            reached = True
            break
        s *= cfg.step

    fraction = selected / n_params
    if on_epoch is not None:
        on_epoch(0, work, {"forget_acc": acc, "forget_acc_before": acc_before, "tries": float(tries),
                           "selected_fraction": fraction})
    info = {"epochs": 1.0, "skipped": 0.0, "tries": float(tries), "reached": float(reached), "alpha": alpha,
            "percentile": pct, "s": s_used, "selected": float(selected), "selected_fraction": fraction,
            "forget_acc": acc, "forget_acc_before": acc_before}
    return UnlearnResult(work.eval(), meter.used, info)
