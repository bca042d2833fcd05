"""Witches' Brew: clean-label targeted poisoning by gradient matching (Geiping et al., ICLR 2021; docs/paper.md 3.2).

Threat model: the attacker wants ``n_targets`` chosen test points of a target class classified as an adversarial
class ``y_adv``. It may perturb the inputs (never the labels) of ``round(poison_fraction * n_train)`` training
points (a ``poison_fraction`` of 1 or more is a count) *of the adversarial class*, each within an ℓ∞ ball of radius
``eps`` and the valid input range [0, 1]. The victim is then trained from scratch on the poisoned set with its usual
recipe and an initialisation the attacker does not know.

Crafting (the reference's algorithm): train a surrogate of the victim (same architecture and recipe, a different
seed) on the clean training set; let g_t = ∇_θ Σ_t ℓ(f(x_t), y_adv) be the gradient that would push the targets
to the adversarial class. For each of ``restarts`` random starts, minimise the gradient-matching loss
1 − cos(g_t, ∇_θ Σ_i ℓ(f(x_i + δ_i), y_i)) over the perturbations δ with signed Adam (``steps`` steps, learning
rate ``lr`` × eps, decayed ×0.1 at 3/8, 5/8 and 7/8 of the steps), projecting onto the ε-ball and [0, 1] after each
step; keep the restart with the lowest final loss. No differentiable augmentation (the reference's option for
augmented training): our default training recipe does not augment.

Targets and classes are drawn by seed: a target class, an adversarial class ≠ it, and ``n_targets`` test points of
the target class that the surrogate classifies correctly.

Metric: ``target_success``, the fraction of targets classified as the adversarial class (docs/paper.md: "poison success
rate"); ``target_adv_prob`` is the mean softmax probability of the adversarial class on the targets. The per-target
success indicators are the paired scores of the verdict. GUS-style scores (docs/paper.md 2) do not apply: they test for
known i.i.d. Gaussian noise in the inputs, and these perturbations are optimised, not random.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..context import RunContext
from ..data import Dataset
from ..errors import UsageError, check_choice, check_range
from ..models import create_model
from ..training import flat_grad, predict_logits, train
from . import ATTACKS, Poisoning, SuccessCountAttack, Victim, poison_amount

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WitchesBrewConfig:
    poison_fraction: float = 0.05  # of the whole training set; the poisons come from the adversarial class
    eps: float = 0.5  # ℓ∞ radius in [0, 1] input units
    n_targets: int = 1
    steps: int = 250
    restarts: int = 8
    lr: float = 0.1  # signed-Adam step size, in units of eps
    checkpoints: int = 1  # match at this many evenly spaced points of the surrogate's training (1: trained model)
    retrain_rounds: int = 0  # retrain the surrogate on the current poisons and brew on, this many times
    adversarial: str = "runner_up"  # adversarial class: the surrogate's runner-up on the targets, or "random"

    def __post_init__(self) -> None:
        object.__setattr__(self, "poison_fraction", poison_amount(self.poison_fraction))  # a fraction or a count
        check_range("eps", self.eps, low=0, high=1, low_open=True)
        check_range("n_targets", self.n_targets, low=1)
        check_range("steps", self.steps, low=1)
        check_range("restarts", self.restarts, low=1)
        check_range("lr", self.lr, low=0, low_open=True)
        check_range("checkpoints", self.checkpoints, low=1)
        check_range("retrain_rounds", self.retrain_rounds, low=0)
        check_choice("adversarial", self.adversarial, ("runner_up", "random"))


#: ∇_θ of the summed cross-entropy, flattened over the trainable parameters (`training.flat_grad`).
_flat_grad = flat_grad


def matching_loss(
    models: list[nn.Module], target_grads: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """Mean over the models of 1 − cos(g_t, ∇_θ Σ ℓ(model(x), y)): what the poisons minimise (differentiable in x)."""
    losses = [1 - nn.functional.cosine_similarity(_flat_grad(m, x, y, create_graph=True), g_t, dim=0)
              for m, g_t in zip(models, target_grads, strict=True)]
    return torch.stack(losses).mean()


def project(x_clean: torch.Tensor, delta: torch.Tensor, eps: float) -> torch.Tensor:
    """The perturbation nearest ``delta`` with ‖δ‖∞ ≤ eps and x_clean + δ in [0, 1]."""
    delta = delta.clamp(-eps, eps)
    return (x_clean + delta).clamp(0.0, 1.0) - x_clean


def brew(
    models: list[nn.Module],
    target_grads: list[torch.Tensor],
    x_clean: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int,
    lr: float,
    gen: torch.Generator,
    init: torch.Tensor | None = None,
) -> tuple[torch.Tensor, float]:
    """One restart of gradient matching from ``init`` (default: uniform in the ε-ball): returns the perturbation
    and its final matching loss."""
    if init is None:
        init = (torch.rand(x_clean.shape, generator=gen) * 2 - 1).to(x_clean.device) * eps
    delta = project(x_clean, init.clone(), eps)
    delta.requires_grad_(True)
    opt = torch.optim.Adam([delta], lr=lr * eps)
    milestones = [steps * 3 // 8, steps * 5 // 8, steps * 7 // 8]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = matching_loss(models, target_grads, x_clean + delta, y)
        (grad,) = torch.autograd.grad(loss, [delta])
        delta.grad = grad.sign()  # signed Adam, as the reference
        opt.step()
        sched.step()
        with torch.no_grad():
            delta.copy_(project(x_clean, delta, eps))
    with torch.no_grad():
        delta = delta.detach()
    final = float(matching_loss(models, target_grads, x_clean + delta, y).detach())
    return delta, final


@ATTACKS.register("witches_brew")
class WitchesBrew(SuccessCountAttack):
    name = "witches_brew"
    Config = WitchesBrewConfig
    removal_metric = "target_success"
    columns = (("target_success", "target success"), ("target_adv_prob", "target p(adv)"))
    cfg: WitchesBrewConfig

    def surrogates(self, x: torch.Tensor, y: torch.Tensor, victim: Victim, ctx: RunContext) -> list[nn.Module]:
        """The attacker's models: the victim's architecture and recipe trained on (x, y) from the attacker's own
        seed, snapshotted at ``checkpoints`` evenly spaced epochs (the last is the trained model)."""
        model = create_model(victim.spec, seed=ctx.child(301).seed)
        epochs = victim.train.epochs
        at = {round(epochs * (i + 1) / self.cfg.checkpoints) - 1 for i in range(self.cfg.checkpoints)}
        snaps: list[nn.Module] = []

        def on_epoch(epoch: int, loss: float) -> None:
            if epoch in at:
                snaps.append(copy.deepcopy(model).eval())

        train(model, x, y, victim.train, ctx.child(303), on_epoch=on_epoch)
        for m in snaps:
            m.requires_grad_(True)
        return snaps

    def choose(self, data: Dataset, surrogate: nn.Module, ctx: RunContext) -> tuple[int, int, torch.Tensor]:
        """Target class, adversarial class and target test indices. The target class and the targets (test points
        of that class the surrogate classifies correctly) are drawn by seed; the adversarial class is drawn by seed
        too (``adversarial="random"``) or is the surrogate's runner-up class on the targets (``"runner_up"``)."""
        gen = ctx.generator(offset=307)
        perm = torch.randperm(data.n_classes, generator=gen)
        target_class = int(perm[0])
        logits = predict_logits(surrogate, data.x_test, ctx.device)
        pool = torch.nonzero((data.y_test == target_class) & (logits.argmax(1) == data.y_test)).flatten()
        if len(pool) < self.cfg.n_targets:
            raise UsageError(f"n_targets={self.cfg.n_targets} but only {len(pool)} test points of class "
                             f"{target_class} are classified correctly; valid: 1..{len(pool)}")
        targets = pool[torch.randperm(len(pool), generator=gen)[: self.cfg.n_targets]].sort().values
        if self.cfg.adversarial == "random":
            adv_class = int(perm[1])
        else:
            probs = logits[targets].softmax(1).mean(0)
            probs[target_class] = -1.0
            adv_class = int(probs.argmax())
        return target_class, adv_class, targets

    def craft(self, data: Dataset, ctx: RunContext, victim: Victim | None = None) -> Poisoning:
        if victim is None:
            raise UsageError("witches_brew crafts against the scenario's model; a victim recipe is required")
        k = self.n_poisons(len(data.x_train))
        models = self.surrogates(data.x_train, data.y_train, victim, ctx)
        target_class, adv_class, targets = self.choose(data, models[-1], ctx)
        candidates = torch.nonzero(data.y_train == adv_class).flatten()
        if not 1 <= k <= len(candidates):
            raise UsageError(f"poison_fraction={self.cfg.poison_fraction} gives {k} poisons; valid: "
                             f"1..{len(candidates)} (the training points of the adversarial class {adv_class})")
        gen = ctx.generator(offset=311)
        indices = candidates[torch.randperm(len(candidates), generator=gen)[:k]].sort().values
        dev = ctx.device
        x_t = data.x_test[targets].to(dev)
        y_adv = torch.full((len(targets),), adv_class, dtype=torch.long, device=dev)
        x_clean, y = data.x_train[indices].to(dev), data.y_train[indices].to(dev)
        best_delta: torch.Tensor | None = None
        start = float("nan")
        for rnd in range(1 + self.cfg.retrain_rounds):
            if rnd > 0:  # the surrogate retrained from a new seed on the training set with the current poisons
                assert best_delta is not None
                x_train = data.x_train.clone()
                x_train[indices] = (x_clean + best_delta).cpu()
                models = self.surrogates(x_train, data.y_train, victim, ctx.child(313 + rnd))
            models = [m.to(dev) for m in models]
            target_grads = [_flat_grad(m, x_t, y_adv, create_graph=False).detach() for m in models]
            if rnd == 0:
                start = float(matching_loss(models, target_grads, x_clean, y).detach())
            inits = [None] * self.cfg.restarts if best_delta is None else [best_delta]
            best_loss = float("inf")
            for r, init in enumerate(inits):
                delta, loss = brew(models, target_grads, x_clean, y, self.cfg.eps, self.cfg.steps, self.cfg.lr,
                                   gen, init)
                log.info("  witches_brew round %d restart %d/%d: matching loss %.4f", rnd, r + 1, len(inits), loss)
                if loss < best_loss:
                    best_delta, best_loss = delta, loss
        assert best_delta is not None
        x_poison = (x_clean + best_delta).clamp(0.0, 1.0).cpu()
        return Poisoning(
            indices=indices,
            x_poison=x_poison,
            y_poison=data.y_train[indices].clone(),  # clean-label: labels unchanged
            arrays={"targets": targets, "target_class": torch.tensor([target_class]),
                    "adv_class": torch.tensor([adv_class]),
                    "matching_loss": torch.tensor([start, best_loss])},
        )

    def n_units(self, data: Dataset) -> int | None:
        return self.cfg.n_targets

    residual_test = "one-sided Fisher exact test: target successes of the unlearned vs the retrained model"


    @staticmethod
    def _target_probs(
        model: nn.Module, data: Dataset, poisoning: Poisoning, ctx: RunContext
    ) -> tuple[torch.Tensor, int]:
        """Softmax outputs of ``model`` on the targets, and the adversarial class."""
        targets = poisoning.arrays["targets"].long()
        logits = predict_logits(model, data.x_test[targets], ctx.device)
        return logits.softmax(1), int(poisoning.arrays["adv_class"][0])

    def scores(self, model: nn.Module, data: Dataset, poisoning: Poisoning, ctx: RunContext) -> np.ndarray:
        """1 for each target classified as the adversarial class, else 0."""
        probs, adv = self._target_probs(model, data, poisoning, ctx)
        return (probs.argmax(1) == adv).double().numpy()

    def evaluate(self, model: nn.Module, data: Dataset, poisoning: Poisoning, ctx: RunContext) -> dict[str, float]:
        return self.evaluate_with_scores(model, data, poisoning, ctx)[0]

    def evaluate_with_scores(
        self, model: nn.Module, data: Dataset, poisoning: Poisoning, ctx: RunContext
    ) -> tuple[dict[str, float], np.ndarray]:
        probs, adv = self._target_probs(model, data, poisoning, ctx)  # one prediction pass for both
        hits = probs.argmax(1) == adv
        return ({"target_success": float(hits.double().mean()), "target_adv_prob": float(probs[:, adv].mean())},
                hits.double().numpy())
