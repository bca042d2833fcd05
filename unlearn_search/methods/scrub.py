"""SCRUB: teacher-student unlearning, alternating max and min distillation passes (Kurmanji et al. 2023).

docs/paper.md section 4. The teacher is a frozen copy of the poisoned model (eval mode, ``requires_grad`` off, in
no optimizer); the student starts as a copy of it and is the only thing trained. For epoch ``e = 1, 2, ...``:

- if ``e <= msteps``: one "max" pass over the forget set, minimising ``-KL(teacher || student)`` (KL alone: no
  cross-entropy, no γ or α);
- then one "min" pass over the retain set, minimising ``γ·CE(student, y) + α·KL(teacher || student)``.

`distill_kl`: ``KL = kl_div(log_softmax(student / T), softmax(teacher / T), reduction="sum") · T² / batch``.
The learning rate is multiplied by ``lr_decay_rate`` once for each entry of ``lr_decay_epochs`` that the
current (1-based) epoch exceeds, as in the reference code; one optimizer serves both passes.

Reference defaults (meghdadk/SCRUB, small scale; docs/references.md): Adam, lr 5e-4, weight decay 0.1, γ 1, α 0.5,
msteps 3, T 2, 10 epochs, lr ×0.1 after epochs 5, 8, 9. Batch sizes (ours, for small data sets): retain 64,
forget 32 (the reference's large scale uses 128 / 32).

Compute: every student step is a forward+backward (1 unit per example) plus a teacher forward
(`FORWARD_ONLY_COST` per example), charged before the batch runs. The run stops when ``epochs`` are done or
the budget is spent, even in the middle of a pass (``epochs=0``: run, following the msteps rule, until the
budget is spent). ``on_epoch`` is called after each epoch whose min pass ran at least one batch, with ``loss``
(the min pass's mean loss), ``lr`` and, in max epochs, ``forget_kl`` (the max pass's mean KL).

Note: at the start the student equals the teacher, so the KL gradient of the first max step is zero; the
student first moves through weight decay (and any train-mode randomness), as in the reference code.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..compute import FORWARD_ONLY_COST
from ..context import RunContext
from ..errors import UsageError, check_choice, check_range
from ..training import OPTIMIZERS, make_optimizer
from . import Budget, EpochCallback, Splits, UnlearnResult, register_method
from ._loop import budgeted_epoch, trainable, working_copy

#: Units per example of one SCRUB step: student forward+backward plus a teacher forward.
STEP_COST = 1.0 + FORWARD_ONLY_COST


@dataclass(frozen=True)
class SCRUBConfig:
    lr: float = 5e-4
    optimizer: str = "adam"
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.1
    gamma: float = 1.0  # weight of the retain cross-entropy in the min pass
    alpha: float = 0.5  # weight of the retain KL in the min pass
    msteps: int = 3  # epochs (the first ones) that start with a max pass
    temperature: float = 2.0
    epochs: int = 10  # 0: until the budget is spent
    lr_decay_epochs: tuple[int, ...] = (5, 8, 9)
    lr_decay_rate: float = 0.1
    retain_batch_size: int = 64
    forget_batch_size: int = 32

    def __post_init__(self) -> None:
        check_range("lr", self.lr, low=0, low_open=True)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_range("momentum", self.momentum, low=0, high=1, high_open=True)
        check_range("weight_decay", self.weight_decay, low=0)
        check_range("gamma", self.gamma, low=0)
        check_range("alpha", self.alpha, low=0)
        check_range("msteps", self.msteps, low=0)
        check_range("temperature", self.temperature, low=0, low_open=True)
        check_range("epochs", self.epochs, low=0)
        check_range("lr_decay_rate", self.lr_decay_rate, low=0, high=1, low_open=True)
        check_range("retain_batch_size", self.retain_batch_size, low=1)
        check_range("forget_batch_size", self.forget_batch_size, low=1)
        try:
            decay = tuple(int(e) for e in self.lr_decay_epochs)
        except (TypeError, ValueError):
            raise UsageError(
                f"lr_decay_epochs={self.lr_decay_epochs!r} is not a list of epochs; valid: e.g. (5, 8, 9)"
            ) from None
        for e in decay:
            check_range("lr_decay_epochs", e, low=1)
        object.__setattr__(self, "lr_decay_epochs", decay)  # lists (JSON, CLI) become tuples


def search_space(trial: Any) -> dict[str, Any]:
    return {
        "optimizer": trial.suggest_categorical("optimizer", ["adam", "sgd"]),
        "lr": trial.suggest_float("lr", 1e-5, 1e-2, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-5, 1e-1, log=True),
        "alpha": trial.suggest_float("alpha", 1e-3, 1.0, log=True),
        "gamma": trial.suggest_float("gamma", 0.5, 1.0),
        "msteps": trial.suggest_int("msteps", 1, 5),
        "temperature": trial.suggest_float("temperature", 1.0, 8.0),
        "epochs": 0,  # the searched budget decides how long it runs
    }


def distill_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temp: float) -> torch.Tensor:
    """KL(teacher || student) at temperature T, summed over the batch, times T² / batch size (reference)."""
    t = temp
    log_p_student = F.log_softmax(student_logits / t, dim=1)
    p_teacher = F.softmax(teacher_logits / t, dim=1)
    return F.kl_div(log_p_student, p_teacher, reduction="sum") * (t * t) / student_logits.shape[0]


def frozen_teacher(model: nn.Module, ctx: RunContext) -> nn.Module:
    """A deep copy of ``model`` on the run's device, in eval mode, every parameter's gradient switched off."""
    teacher = copy.deepcopy(model).to(ctx.device).eval()
    teacher.requires_grad_(False)
    return teacher


def lr_at(cfg: SCRUBConfig, epoch: int) -> float:
    """The learning rate of 1-based ``epoch``: ×lr_decay_rate for each decay epoch that ``epoch`` exceeds."""
    steps = sum(1 for d in cfg.lr_decay_epochs if epoch > d)
    return cfg.lr * cfg.lr_decay_rate**steps


class ScrubState:
    """Teacher, student and the student's optimizer, with its max step and min step (separate for tests)."""

    def __init__(self, model: nn.Module, cfg: SCRUBConfig, ctx: RunContext) -> None:
        self.cfg = cfg
        self.teacher = frozen_teacher(model, ctx)
        self.student = working_copy(model, ctx)
        params = trainable(self.student)  # never the teacher's
        self.opt = make_optimizer(params, cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)

    def set_lr(self, lr: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr

    def max_step(self, x: torch.Tensor) -> torch.Tensor:
        """One ascent step on KL(teacher || student) over forget batch ``x``; returns the loss (−KL)."""
        self.opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            t = self.teacher(x)
        loss = -distill_kl(self.student(x), t, self.cfg.temperature)
        loss.backward()
        self.opt.step()
        return loss.detach()

    def min_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One descent step on γ·CE + α·KL over retain batch ``(x, y)``; returns that loss."""
        self.opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            t = self.teacher(x)
        s = self.student(x)
        kl = distill_kl(s, t, self.cfg.temperature)
        loss = self.cfg.gamma * F.cross_entropy(s, y) + self.cfg.alpha * kl
        loss.backward()
        self.opt.step()
        return loss.detach()


@register_method("scrub", SCRUBConfig, search_space)
def scrub(
    model: nn.Module,
    splits: Splits,
    cfg: SCRUBConfig,
    budget: Budget,
    ctx: RunContext,
    on_epoch: EpochCallback | None = None,
) -> UnlearnResult:
    state = ScrubState(model, cfg, ctx)
    student = state.student
    x_f = splits.x_forget.to(ctx.device)
    x_r, y_r = splits.x_retain.to(ctx.device), splits.y_retain.to(ctx.device)
    meter = budget.meter()
    gen_f, gen_r = ctx.generator(offset=3), ctx.generator(offset=4)

    def max_step(idx: torch.Tensor) -> torch.Tensor:
        return state.max_step(x_f[idx.to(ctx.device)])

    def min_step(idx: torch.Tensor) -> torch.Tensor:
        idx = idx.to(ctx.device)
        return state.min_step(x_r[idx], y_r[idx])

    epoch, reported, max_epochs, max_steps, min_steps = 0, 0, 0, 0, 0
    while cfg.epochs == 0 or epoch < cfg.epochs:
        epoch += 1
        state.set_lr(lr_at(cfg, epoch))
        student.train()
        values: dict[str, float] = {"lr": float(state.opt.param_groups[0]["lr"])}  # as the optimizer has it
        ran, exhausted = 0, False
        if epoch <= cfg.msteps:
            neg_kl, batches, exhausted = budgeted_epoch(
                len(x_f), cfg.forget_batch_size, max_step, meter, gen_f, cost_per_example=STEP_COST,
                device=ctx.device)
            if batches:
                max_epochs += 1
                max_steps += batches
                ran += batches
                values["forget_kl"] = -neg_kl
        if not exhausted:
            loss, batches, exhausted = budgeted_epoch(
                len(x_r), cfg.retain_batch_size, min_step, meter, gen_r, cost_per_example=STEP_COST,
                device=ctx.device)
            if batches:
                min_steps += batches
                ran += batches
                reported += 1
                values["loss"] = loss
                if on_epoch is not None:
                    on_epoch(epoch - 1, student, values)
        if exhausted or ran == 0:
            break
    student.eval()
    info = {
        "epochs": float(reported),
        "max_epochs": float(max_epochs),
        "max_steps": float(max_steps),
        "min_steps": float(min_steps),
    }
    return UnlearnResult(student, meter.used, info)
