"""Bad Teacher: distil from the model on retain data and from a random model on forget data (Chundawat et al. 2023).

Algorithm, as the authors' code runs it (vikram2000b/bad-teaching-unlearning: ``unlearn.py``
``blindspot_unlearner`` / ``UnlearnerLoss`` and the call in ``CIFARSuper20_Rocket_Unlearn.ipynb``):

- the student starts as a copy of the poisoned model and is the only thing trained (train mode; the optimizer is
  built on its parameters alone);
- the competent teacher is the poisoned model itself, frozen (eval mode, ``requires_grad`` off, in no optimizer);
- the incompetent teacher is a freshly, randomly initialised model of the same architecture, frozen likewise
  (`incompetent_teacher`: every submodule's ``reset_parameters``, seeded from the run context, drawn on the CPU);
- the training set is the forget set plus a random subset of ``int(retain_fraction * n_retain)`` retain examples,
  drawn once for the run (seeded), shuffled together each epoch;
- each step minimises KL(teacher ‖ student) at temperature T, where each example's teacher distribution is the
  incompetent teacher's softmax(t/T) for forget examples and the competent teacher's for retain examples
  (`bad_teacher_loss`). The authors' ``F.kl_div`` uses its default reduction, an elementwise mean: the summed KL
  divided by batch size × number of classes, with no T² factor; so is ours.

Reference defaults (the notebook's call; docs/references.md): Adam lr 1e-4, 1 epoch, T = 1, a 30% retain subset
(``random.sample(retain, int(0.3 * len(retain)))``). Ours: batch 64 for small data sets (theirs 256); the
incompetent teacher takes PyTorch's default initialisation of each layer (``reset_parameters``), which for models
whose constructor initialises differently (``resnet_cifar``'s Kaiming-normal convs) is another random
initialisation than a fresh constructor call; the search space also offers SGD (not in the reference).

Compute: each example of a step costs a student forward+backward (1 unit) plus two teacher forwards
(`FORWARD_ONLY_COST` each), charged before the batch runs. The run stops when ``epochs`` are done or the budget is
spent (``epochs=0``: until the budget is spent; every epoch reuses the same retain subset). ``on_epoch`` gets
``loss`` (the epoch's mean loss).
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
from ..errors import check_range
from ..training import make_optimizer
from . import Budget, EpochCallback, Splits, UnlearnResult, register_method
from ._loop import budgeted_epoch, reinitialise, trainable, working_copy
from .gd import validate_sgd_fields
from .scrub import frozen_teacher

#: Units per example of one step: student forward+backward plus the two teachers' forwards.
STEP_COST = 1.0 + 2 * FORWARD_ONLY_COST
#: Generator offsets: the retain subset, the per-epoch shuffle; ``ctx.child(INCOMPETENT_SEED_OFFSET).seed`` seeds
#: the incompetent teacher's weights.
SUBSET_OFFSET = 51
SHUFFLE_OFFSET = 52
INCOMPETENT_SEED_OFFSET = 53


@dataclass(frozen=True)
class BadTeacherConfig:
    lr: float = 1e-4
    optimizer: str = "adam"
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.0
    temperature: float = 1.0
    retain_fraction: float = 0.3  # share of the retain set drawn (once) into the training set
    epochs: int = 1  # 0: until the budget is spent
    batch_size: int = 64

    def __post_init__(self) -> None:
        validate_sgd_fields(self)
        check_range("temperature", self.temperature, low=0, low_open=True)
        check_range("retain_fraction", self.retain_fraction, low=0, high=1)


def search_space(trial: Any) -> dict[str, Any]:
    return {
        "optimizer": trial.suggest_categorical("optimizer", ["adam", "sgd"]),
        "lr": trial.suggest_float("lr", 1e-5, 1e-2, log=True),
        "temperature": trial.suggest_float("temperature", 1.0, 4.0),
        "retain_fraction": trial.suggest_float("retain_fraction", 0.1, 1.0),
        "epochs": 0,  # the searched budget decides how long it runs
    }


def bad_teacher_loss(
    student_logits: torch.Tensor,
    competent_logits: torch.Tensor,
    incompetent_logits: torch.Tensor,
    is_forget: torch.Tensor,
    temp: float,
) -> torch.Tensor:
    """KL(teacher ‖ student) at T, the teacher being the incompetent one on forget rows (``is_forget``) and the
    competent one elsewhere; elementwise mean (summed KL / (batch × classes)), as ``F.kl_div``'s default."""
    p_comp = F.softmax(competent_logits / temp, dim=1)
    p_inc = F.softmax(incompetent_logits / temp, dim=1)
    target = torch.where(is_forget.view(-1, 1), p_inc, p_comp)
    log_student = F.log_softmax(student_logits / temp, dim=1)
    return F.kl_div(log_student, target, reduction="sum") / student_logits.numel()


def incompetent_teacher(model: nn.Module, ctx: RunContext) -> nn.Module:
    """A randomly initialised, frozen model of ``model``'s architecture (seeded from ``ctx``; drawn on the CPU, so
    the same seed gives the same weights on any device)."""
    fresh = copy.deepcopy(model).cpu()
    reinitialise(fresh, ctx.child(INCOMPETENT_SEED_OFFSET).seed)
    fresh = fresh.to(ctx.device).eval()
    fresh.requires_grad_(False)
    return fresh


class BadTeacherState:
    """Student, both frozen teachers and the student's optimizer, with one step (separate for tests)."""

    def __init__(self, model: nn.Module, cfg: BadTeacherConfig, ctx: RunContext) -> None:
        self.cfg = cfg
        self.competent = frozen_teacher(model, ctx)
        self.incompetent = incompetent_teacher(model, ctx)
        self.student = working_copy(model, ctx)
        self.opt = make_optimizer(trainable(self.student), cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)

    def step(self, x: torch.Tensor, is_forget: torch.Tensor) -> torch.Tensor:
        """One descent step of `bad_teacher_loss` on batch ``x``; returns the loss."""
        with torch.no_grad():
            comp, inc = self.competent(x), self.incompetent(x)
        self.opt.zero_grad(set_to_none=True)
        loss = bad_teacher_loss(self.student(x), comp, inc, is_forget, self.cfg.temperature)
        loss.backward()
        self.opt.step()
        return loss.detach()


@register_method("bad_teacher", BadTeacherConfig, search_space)
def bad_teacher(
    model: nn.Module,
    splits: Splits,
    cfg: BadTeacherConfig,
    budget: Budget,
    ctx: RunContext,
    on_epoch: EpochCallback | None = None,
) -> UnlearnResult:
    state = BadTeacherState(model, cfg, ctx)
    student = state.student
    n_sub = int(cfg.retain_fraction * splits.n_retain)
    subset = torch.randperm(splits.n_retain, generator=ctx.generator(offset=SUBSET_OFFSET))[:n_sub]
    x = torch.cat([splits.x_forget, splits.x_retain[subset]]).to(ctx.device)
    is_forget = torch.cat([torch.ones(splits.n_forget, dtype=torch.bool), torch.zeros(n_sub, dtype=torch.bool)])
    is_forget = is_forget.to(ctx.device)
    meter, gen = budget.meter(), ctx.generator(offset=SHUFFLE_OFFSET)

    def step(idx: torch.Tensor) -> torch.Tensor:
        idx = idx.to(ctx.device)
        return state.step(x[idx], is_forget[idx])

    epoch, steps = 0, 0
    while cfg.epochs == 0 or epoch < cfg.epochs:
        student.train()
        loss, batches, exhausted = budgeted_epoch(len(x), cfg.batch_size, step, meter, gen,
                                                  cost_per_example=STEP_COST, device=ctx.device)
        if batches:
            epoch += 1
            steps += batches
            if on_epoch is not None:
                on_epoch(epoch - 1, student, {"loss": loss})
        if exhausted or batches == 0:
            break
    student.eval()
    info = {"epochs": float(epoch), "steps": float(steps), "retain_subset": float(n_sub)}
    return UnlearnResult(student, meter.used, info)
