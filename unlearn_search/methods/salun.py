"""SalUn: random-label unlearning of only the weights salient to the forget loss (Fan et al., ICLR 2024).

Algorithm, as the authors' classification code runs it (OPTML-Group/Unlearn-Saliency, ``Classification/
generate_mask.py`` and ``Classification/unlearn/RL.py``, read at commit a6e89fd "Fix weight decay"):

1. Saliency mask (`saliency_mask`). With the model in eval mode, the gradient of the batch-mean cross-entropy on
   the forget set (true labels) is summed over shuffled forget batches and its magnitude taken elementwise. The
   mask keeps the ``floor(mask_ratio * N)`` elements of largest magnitude, N being every trainable parameter
   element of the model (weights, biases, norm affines): ONE threshold over the whole model, not one per tensor
   (`top_fraction`). Ties (elements with equal magnitude, e.g. exact zeros) are broken by position (a stable sort);
   the authors' ``argsort`` leaves them to the sort.
2. Random-label unlearning, ``epochs`` times, in train mode. Each epoch is one shuffled pass over the forget set,
   every batch given freshly drawn random labels, FOLLOWED by one shuffled pass over the retain set with its true
   labels (the authors' CIFAR-10 / SVHN branch; their CIFAR-100 / TinyImageNet branch instead shuffles the
   relabelled forget set and the retain set together into one loader, not offered here). Each step minimises the
   batch-mean cross-entropy; before the optimizer step the gradient is multiplied by the mask, and after it every
   masked-out element is put back to its starting value and its optimizer state (momentum buffer, Adam moments)
   zeroed (`hold_masked_out`). So weight decay and momentum never move a masked-out weight: they stay
   bit-identical. (The authors' code masked only the gradient until a6e89fd; SGD's weight decay and momentum then
   moved every weight, salient or not, a bug docs/references.md lists.)

Random labels: the authors' code draws each forget label uniformly over all K classes (K = the model's output
width), so about 1/K of the forget examples keep their own label; that is the default. ``exclude_true_label=True``
draws among the K - 1 other classes instead (the "random other label" of the method's usual description).

Reference defaults (authors' README example for ResNet-18 on CIFAR-10; docs/references.md): mask ratio 0.5
(``mask/with_0.5.pt``), SGD lr 0.013, momentum 0.9, weight decay 5e-4, 10 epochs; the lr schedule of their loop
(x0.1 at epochs 91 and 136) never fires within 10 epochs. Batch 64 is our choice for small data sets (theirs:
256, both for the mask and for unlearning); the search space also offers Adam (not in the reference).

Compute: the saliency pass costs one forward+backward per forget example (``n_forget`` units), charged before
it runs; if the budget cannot afford it the method returns the unchanged copy (``info["skipped"] = 1``). Every
unlearning batch costs its size, charged before it runs; the run stops when ``epochs`` are done or the budget is
spent, even within a pass (``epochs=0``: until the budget is spent). ``on_epoch`` gets ``loss`` (mean over the
epoch's batches), ``forget_ce`` (cross-entropy to the random labels) and ``retain_ce``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..context import RunContext
from ..errors import UsageError, check_range
from ..training import iterate_batches, make_optimizer
from . import Budget, EpochCallback, Splits, UnlearnResult, register_method
from ._loop import budgeted_epoch, trainable, working_copy
from .gd import validate_sgd_fields

#: Generator offsets: the saliency pass's forget batches, the unlearning forget and retain shuffles, the labels.
SALIENCY_OFFSET = 41
FORGET_OFFSET = 42
RETAIN_OFFSET = 43
LABEL_OFFSET = 44


@dataclass(frozen=True)
class SalUnConfig:
    mask_ratio: float = 0.5  # fraction of all trainable parameter elements that may change (the most salient)
    lr: float = 0.013
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    epochs: int = 10  # 0: until the budget is spent
    batch_size: int = 64
    exclude_true_label: bool = False  # False: labels uniform over all classes (authors' code); True: over the others

    def __post_init__(self) -> None:
        validate_sgd_fields(self)
        check_range("mask_ratio", self.mask_ratio, low=0, high=1, low_open=True)
        if not isinstance(self.exclude_true_label, bool):
            raise UsageError(f"exclude_true_label={self.exclude_true_label!r} is not a boolean; valid: true, false")


def search_space(trial: Any) -> dict[str, Any]:
    return {
        "optimizer": trial.suggest_categorical("optimizer", ["sgd", "adam"]),
        "lr": trial.suggest_float("lr", 1e-4, 1e-1, log=True),
        "mask_ratio": trial.suggest_float("mask_ratio", 0.1, 1.0),  # the authors' masks: 0.1, 0.2, ..., 1.0
        "epochs": 0,  # the searched budget decides how long it runs
    }


def top_fraction(scores: list[torch.Tensor], ratio: float) -> list[torch.Tensor]:
    """Boolean masks (shaped as ``scores``) selecting the ``floor(ratio * N)`` largest of all N elements together:
    one threshold across every tensor. Ties are broken by position (earlier tensors, earlier elements first)."""
    flat = torch.cat([s.flatten() for s in scores])
    k = int(flat.numel() * ratio)
    order = torch.argsort(flat, descending=True, stable=True)
    chosen = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    chosen[order[:k]] = True
    return [m.view_as(s) for m, s in zip(chosen.split([s.numel() for s in scores]), scores, strict=True)]


def forget_gradient(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, gen: torch.Generator
) -> list[torch.Tensor]:
    """Σ over shuffled batches of ∇ batch-mean CE on ``(x, y)``, per trainable parameter, in eval mode (the model's
    mode is restored after; its ``.grad`` fields are untouched)."""
    params = trainable(model)
    sums = [torch.zeros_like(p) for p in params]
    was_training = model.training
    model.eval()
    try:
        for idx in iterate_batches(len(x), batch_size, gen, device=x.device):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            for s, g in zip(sums, grads, strict=True):
                if g is not None:
                    s.add_(g)
    finally:
        model.train(was_training)
    return sums


def saliency_mask(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, ratio: float, batch_size: int, gen: torch.Generator
) -> list[torch.Tensor]:
    """The SalUn mask of ``trainable(model)``: the ``ratio`` most salient elements by |forget gradient|."""
    return top_fraction([g.abs() for g in forget_gradient(model, x, y, batch_size, gen)], ratio)


def hold_masked_out(
    opt: torch.optim.Optimizer,
    params: list[nn.Parameter],
    masks: list[torch.Tensor],
    anchors: list[torch.Tensor | None],
) -> None:
    """After a step: every masked-out element back to its anchor (starting) value, its optimizer state zeroed.
    ``anchors[i]`` is None where ``masks[i]`` selects every element (nothing to hold)."""
    with torch.no_grad():
        for p, m, a in zip(params, masks, anchors, strict=True):
            if a is None:
                continue
            p.copy_(torch.where(m, p, a))
            for v in opt.state.get(p, {}).values():
                if torch.is_tensor(v) and v.shape == p.shape:
                    v.masked_fill_(~m, 0)


def random_labels(
    y: torch.Tensor, n_classes: int, gen: torch.Generator, exclude_true: bool
) -> torch.Tensor:
    """Random labels for ``y``: uniform over all classes, or (``exclude_true``) over the classes other than y."""
    if exclude_true and n_classes > 1:
        shift = torch.randint(1, n_classes, (len(y),), generator=gen).to(y.device)
        return (y + shift) % n_classes
    return torch.randint(0, n_classes, (len(y),), generator=gen).to(y.device)


@register_method("salun", SalUnConfig, search_space)
def salun(
    model: nn.Module,
    splits: Splits,
    cfg: SalUnConfig,
    budget: Budget,
    ctx: RunContext,
    on_epoch: EpochCallback | None = None,
) -> UnlearnResult:
    work = working_copy(model, ctx)
    params = trainable(work)
    xf, yf = splits.x_forget.to(ctx.device), splits.y_forget.to(ctx.device)
    xr, yr = splits.x_retain.to(ctx.device), splits.y_retain.to(ctx.device)
    meter = budget.meter()
    if not meter.can_afford(len(xf)):
        work.eval()
        return UnlearnResult(work, meter.used, {"epochs": 0.0, "steps": 0.0, "skipped": 1.0})
    meter.used += len(xf)
    masks = saliency_mask(work, xf, yf, cfg.mask_ratio, cfg.batch_size, ctx.generator(offset=SALIENCY_OFFSET))
    anchors = [None if bool(m.all()) else p.detach().clone() for p, m in zip(params, masks, strict=True)]
    with torch.no_grad():
        n_classes = int(work.eval()(xr[:1] if len(xr) else xf[:1]).shape[1])
    opt = make_optimizer(params, cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)
    gen_f, gen_r = ctx.generator(offset=FORGET_OFFSET), ctx.generator(offset=RETAIN_OFFSET)
    label_gen = ctx.generator(offset=LABEL_OFFSET)

    def update(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(work(x), y)
        loss.backward()
        for p, m in zip(params, masks, strict=True):
            if p.grad is not None:
                p.grad.masked_fill_(~m, 0)
        opt.step()
        hold_masked_out(opt, params, masks, anchors)
        return loss.detach()

    def forget_step(idx: torch.Tensor) -> torch.Tensor:
        idx = idx.to(ctx.device)
        return update(xf[idx], random_labels(yf[idx], n_classes, label_gen, cfg.exclude_true_label))

    def retain_step(idx: torch.Tensor) -> torch.Tensor:
        idx = idx.to(ctx.device)
        return update(xr[idx], yr[idx])

    epoch, steps = 0, 0
    while cfg.epochs == 0 or epoch < cfg.epochs:
        work.train()
        f_loss, f_batches, exhausted = budgeted_epoch(len(xf), cfg.batch_size, forget_step, meter, gen_f,
                                                      device=ctx.device)
        r_loss, r_batches = 0.0, 0
        if not exhausted:
            r_loss, r_batches, exhausted = budgeted_epoch(len(xr), cfg.batch_size, retain_step, meter, gen_r,
                                                          device=ctx.device)
        batches = f_batches + r_batches
        if batches:
            epoch += 1
            steps += batches
            if on_epoch is not None:
                mean = (f_loss * f_batches + r_loss * r_batches) / batches
                on_epoch(epoch - 1, work, {"loss": mean, "forget_ce": f_loss, "retain_ce": r_loss})
        if exhausted or batches == 0:
            break
    work.eval()
    selected = sum(int(m.sum()) for m in masks)
    total = sum(m.numel() for m in masks)
    info = {"epochs": float(epoch), "steps": float(steps), "skipped": 0.0, "mask_fraction": selected / max(total, 1)}
    return UnlearnResult(work, meter.used, info)
