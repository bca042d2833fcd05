"""The training recipe: plain supervised training on in-memory tensors, with compute accounting.

Used for the poisoned model, the retrained reference and, through `make_optimizer` and `iterate_batches`, by the
unlearning methods, so that everything shares one notion of an epoch and of a unit of compute.

The paper-scale recipe adds, all off by default: per-batch data augmentation (``augment="crop_flip"``: the standard
CIFAR random 4-pixel-padded crop and horizontal flip, applied on the device to the batch as indexed, so poisons are
augmented like every other point), a per-epoch cosine learning-rate schedule, and on CUDA bf16 autocast (``amp``).
On CUDA, models with conv layers also train in channels_last memory format. Only `train` augments; evaluation, GUS
and the unlearning methods see the raw inputs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .compute import ComputeMeter
from .context import RunContext
from .errors import check_choice, check_range

log = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "sgd")
AUGMENTS = ("none", "crop_flip")
LR_SCHEDULES = ("constant", "cosine")
CROP_PADDING = 4  # pixels of zero padding around the image before the random crop (the standard CIFAR recipe)


@dataclass(frozen=True)
class TrainConfig:
    """How the poisoned and retrained models are trained (the recipe that retraining cost is measured in)."""

    epochs: int = 60
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.0
    augment: str = "none"  # or "crop_flip" (random crop with 4-pixel zero padding + horizontal flip)
    lr_schedule: str = "constant"  # or "cosine": annealed to 0 over `epochs`, stepped once per epoch
    amp: bool = False  # bf16 autocast; CUDA only (ignored on CPU)
    max_length: int = 128  # text datasets: tokens per row (truncated / padded); ignored for images

    def __post_init__(self) -> None:
        check_range("epochs", self.epochs, low=1)
        check_range("max_length", self.max_length, low=1)
        check_range("batch_size", self.batch_size, low=1)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_range("lr", self.lr, low=0, low_open=True)
        check_range("momentum", self.momentum, low=0, high=1, high_open=True)
        check_range("weight_decay", self.weight_decay, low=0)
        check_choice("augment", self.augment, AUGMENTS)
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)

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
    n: int, batch_size: int, generator: torch.Generator, shuffle: bool = True, device: torch.device | None = None
) -> Iterator[torch.Tensor]:
    """Index batches over ``range(n)``, reshuffled by ``generator`` on each call (one call = one epoch). With
    ``device`` the epoch's order is moved there once, so batches need no host-to-device copy each."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    if device is not None:
        order = order.to(device)
    yield from order.split(batch_size)


def draw_crop_flip(
    n: int, generator: torch.Generator, pad: int = CROP_PADDING
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random parameters of `apply_crop_flip` for ``n`` images: row and column offsets in ``0..2*pad`` and flips."""
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    return offsets[0], offsets[1], flip


def apply_crop_flip(
    x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor, pad: int = CROP_PADDING
) -> torch.Tensor:
    """Crop ``x`` (B, C, H, W), zero-padded by ``pad``, at per-image offsets ``(dy, dx)`` and mirror where ``flip``.

    Vectorised: one gather over the flattened padded images; offset ``pad`` without flip is the identity.
    """
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))  # (B, C, H+2p, W+2p), zeros outside the image
    wp = w + 2 * pad
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    rows = dy.to(x.device)[:, None] + ar_h  # (B, H)
    cols = dx.to(x.device)[:, None] + torch.where(flip.to(x.device)[:, None], w - 1 - ar_w, ar_w)  # (B, W)
    src = (rows[:, :, None] * wp + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    return padded.flatten(2).gather(2, src).view(b, c, h, w)


def crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = CROP_PADDING) -> torch.Tensor:
    """The standard CIFAR augmentation of a batch ``x`` (B, C, H, W), seeded by ``generator`` (a CPU generator)."""
    return apply_crop_flip(x, *draw_crop_flip(len(x), generator, pad), pad=pad)


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
    ctx: RunContext,
    meter: ComputeMeter | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
) -> nn.Module:
    """Train ``model`` in place on ``(x, y)`` with ``cfg``; returns it. Charges each batch to ``meter``.
    Dropout (language models) draws from the global RNG, seeded from ``ctx`` for the duration."""
    with ctx.seeded_global_rng(3):
        return _train(model, x, y, cfg, ctx, meter, on_epoch)


def _train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
    ctx: RunContext,
    meter: ComputeMeter | None,
    on_epoch: Callable[[int, float], None] | None,
) -> nn.Module:
    meter = meter if meter is not None else ComputeMeter()
    device = ctx.device
    cuda = device.type == "cuda"
    # channels_last speeds up convs on CUDA; restored below so the returned model looks as before.
    channels_last = cuda and any(isinstance(m, nn.Conv2d) for m in model.modules()) and x.dim() == 4
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    x, y = x.to(device), y.to(device)
    opt = make_optimizer(model.parameters(), cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs) if cfg.lr_schedule == "cosine" else None
    loss_fn = nn.CrossEntropyLoss()
    gen = ctx.generator(offset=1)
    aug_gen = ctx.generator(offset=2)  # its own stream: the shuffling order does not depend on `augment`
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cfg.amp and cuda else contextlib.nullcontext
    n = len(x)
    for epoch in range(cfg.epochs):
        model.train()
        total = torch.zeros((), device=device)
        # The epoch's order and augmentation draws go to the device once: no host sync per batch.
        order = torch.randperm(n, generator=gen).to(device)  # the order `iterate_batches` would give
        if cfg.augment == "crop_flip":
            dy, dx, flip = (t.to(device) for t in draw_crop_flip(n, aug_gen))
        start = 0
        for idx in order.split(cfg.batch_size):
            end = start + len(idx)
            xb = x[idx]
            if cfg.augment == "crop_flip":
                xb = apply_crop_flip(xb, dy[start:end], dx[start:end], flip[start:end])
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            opt.zero_grad(set_to_none=True)
            with autocast():
                loss = loss_fn(model(xb), y[idx])
            loss.backward()
            opt.step()
            meter.charge_train(len(idx))
            total += loss.detach() * len(idx)
            start = end
        if sched is not None:
            sched.step()
        if on_epoch is not None:
            on_epoch(epoch, float(total) / n)  # one host sync per epoch, not per batch
    if channels_last:
        model.to(memory_format=torch.contiguous_format)
    model.eval()
    return model


def flat_grad(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, create_graph: bool = False, reduction: str = "sum"
) -> torch.Tensor:
    """∇_θ of the cross-entropy of ``model`` on ``(x, y)`` (``reduction``: summed or averaged over the batch),
    flattened over the trainable parameters in their order (zeros for one the loss does not reach); no ``.grad`` is
    touched. Witches' Brew matches these; `analysis` compares them with parameter shifts."""
    params = [p for p in model.parameters() if p.requires_grad]
    loss = F.cross_entropy(model(x), y, reduction=reduction)
    grads = torch.autograd.grad(loss, params, create_graph=create_graph, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params,
                                                                                              strict=True)])


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


@torch.no_grad()
def accuracy_and_losses(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, batch_size: int = 1024
) -> tuple[float, torch.Tensor]:
    """`accuracy` and `metrics.per_sample_loss` of ``(x, y)`` from one forward pass per batch instead of two.

    The same batches (both use 1,024) give the same logits, so both numbers are exactly what the two functions
    return; the loss is taken on the model's own output dtype (as `per_sample_loss`), the prediction on its float
    copy (as `predict_logits`).
    """
    model.eval()
    model.to(device)
    correct, losses = [], []
    for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True):
        out = model(xb.to(device))
        correct.append(out.float().cpu().argmax(1) == yb.cpu())
        losses.append(F.cross_entropy(out, yb.to(device), reduction="none").float().cpu())
    if not correct:
        return float("nan"), torch.empty(0)
    loss = torch.cat(losses)
    if not bool(torch.isfinite(loss).all()):
        raise NonFiniteOutputs(f"{int((~torch.isfinite(loss)).sum())} of {len(loss)} losses are not finite")
    return float(torch.cat(correct).float().mean()), loss


class NonFiniteOutputs(RuntimeError):
    """A model with finite weights whose outputs overflow (a collapsed model): it cannot be scored."""
