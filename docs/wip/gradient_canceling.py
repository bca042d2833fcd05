"""Gradient Canceling: model-targeted indiscriminate poisoning (Lu, Kamath, Yu, ICML 2023; PAPER.md 3.3).

Threat model: the attacker *adds* ``k = round(poison_fraction * n_train)`` points to the clean training set S
(nothing is removed, so ``indices`` is empty and the retain set is all of S). Given a target parameter θ_p with
low test accuracy, the poison inputs are optimised so that θ_p is (nearly) a stationary point of the training loss
on S ∪ S_p, i.e. they minimise ``½‖∇_θ L(θ_p; S) + ε_d ∇_θ L(θ_p; S_p)‖²`` with L the mean cross-entropy and
ε_d = k / n, by Adam on the inputs with a projection onto [0, 1] after each step. When the victim's loss is convex
(the ``linear`` model, multinomial logistic regression), training on S ∪ S_p is then pulled towards θ_p.

Target parameter (our substitute): the reference obtains θ_p from a separate parameter-corruption attack (GradPC).
We instead train the attack's architecture (config ``model``, default ``linear``) on S with the labels of a random
fraction ``target_flip`` of the points shifted ``y -> (y + 1) mod n_classes``, with the recipe
``TrainConfig(epochs=target_epochs, weight_decay=target_weight_decay)`` (Adam, lr 1e-3, batch 64). The attack is
only meant to work when the scenario trains the same convex model, e.g. ``--model linear --attack
gradient_canceling``; the poison labels are the labels of the points the poisons start from (random
clean training points) shifted by one, the labels θ_p was trained towards, so each poison's gradient points
against the clean gradient at θ_p.

Measured (digits, linear, seed 0, victim Adam 30 epochs): at the default 3% budget the cancellation is weak
(‖∇‖ 0.24 -> 0.21 for target_flip 0.3) and test accuracy does not drop (0.914 -> 0.914); at 20% with
target_flip 0.6 ‖∇‖ 0.38 -> 0.24 and accuracy 0.914 -> 0.864. Bounded [0, 1] inputs cap each poison's gradient,
so a budget ε_d can only cancel a clean gradient of about ε_d·√2·‖x‖_max at θ_p.

Metric: ``gc_test_error`` = 1 - test accuracy (larger = more poisoned); the per-test-point misclassification
indicators are the paired scores of the verdict, tested with a one-sided Fisher exact test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..context import RunContext
from ..data import Dataset
from ..errors import UsageError, check_range
from ..models import ModelSpec, check_model_name, create_model
from ..training import TrainConfig, predict_logits, train
from . import ATTACKS, Attack, Poisoning


@dataclass(frozen=True)
class GradientCancelingConfig:
    poison_fraction: float = 0.03  # ε_d of the reference on MNIST
    model: str = "linear"  # architecture of θ_p (the attack works when the scenario trains the same convex model)
    target_flip: float = 1.0  # fraction of training labels shifted y -> y+1 to obtain θ_p
    target_epochs: int = 30
    target_weight_decay: float = 0.0
    steps: int = 500  # Adam steps on the poison inputs
    lr: float = 0.05

    def __post_init__(self) -> None:
        check_range("poison_fraction", self.poison_fraction, low=0, high=1, low_open=True, high_open=True)
        check_model_name(self.model)
        check_range("target_flip", self.target_flip, low=0, high=1, low_open=True)
        check_range("target_epochs", self.target_epochs, low=1)
        check_range("target_weight_decay", self.target_weight_decay, low=0)
        check_range("steps", self.steps, low=0)
        check_range("lr", self.lr, low=0, low_open=True)


def _flat_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """∇_θ of the mean cross-entropy of ``model`` on (x, y), flattened over all parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    loss = nn.functional.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, params, create_graph=create_graph)
    return torch.cat([g.reshape(-1) for g in grads])


@ATTACKS.register("gradient_canceling")
class GradientCanceling(Attack):
    name = "gradient_canceling"
    Config = GradientCancelingConfig
    removal_metric = "gc_test_error"
    cfg: GradientCancelingConfig

    def target_model(self, data: Dataset, ctx: RunContext) -> nn.Module:
        """θ_p: the attack's architecture trained on S with a ``target_flip`` fraction of labels shifted by one."""
        n = len(data.x_train)
        gen = ctx.generator(offset=211)
        flip = torch.randperm(n, generator=gen)[: round(self.cfg.target_flip * n)]
        y = data.y_train.clone()
        y[flip] = (y[flip] + 1) % data.n_classes
        model = create_model(ModelSpec(self.cfg.model, data.input_shape, data.n_classes), seed=ctx.seed)
        recipe = TrainConfig(epochs=self.cfg.target_epochs, weight_decay=self.cfg.target_weight_decay)
        return train(model, data.x_train, y, recipe, ctx.child(213))

    def craft(self, data: Dataset, ctx: RunContext) -> Poisoning:
        n = len(data.x_train)
        k = round(self.cfg.poison_fraction * n)
        if k < 1:
            raise UsageError(f"poison_fraction={self.cfg.poison_fraction} gives {k} poisons of {n} points; need >= 1")
        target = self.target_model(data, ctx).cpu().eval()
        for p in target.parameters():
            p.requires_grad_(True)
        gen = ctx.generator(offset=223)
        start = torch.randperm(n, generator=gen)[:k]
        x = data.x_train[start].clone()
        y_poison = (data.y_train[start] + 1) % data.n_classes  # the shifted labels θ_p was trained towards
        eps_d = k / n
        g_clean = _flat_grad(target, data.x_train, data.y_train, create_graph=False).detach()

        def objective(xp: torch.Tensor) -> torch.Tensor:
            g = g_clean + eps_d * _flat_grad(target, xp, y_poison, create_graph=True)
            return 0.5 * g.pow(2).sum()

        before = float(objective(x.clone().requires_grad_(True)).detach() * 2) ** 0.5
        x = x.requires_grad_(True)
        opt = torch.optim.Adam([x], lr=self.cfg.lr)
        for _ in range(self.cfg.steps):
            opt.zero_grad(set_to_none=True)
            (grad_x,) = torch.autograd.grad(objective(x), [x])
            x.grad = grad_x
            opt.step()
            with torch.no_grad():
                x.clamp_(0.0, 1.0)
        x_poison = x.detach().clone()
        after = float(objective(x_poison.clone().requires_grad_(True)).detach() * 2) ** 0.5
        return Poisoning(
            indices=torch.empty(0, dtype=torch.long),
            x_poison=x_poison,
            y_poison=y_poison,
            arrays={"grad_norm_before": torch.tensor([before]), "grad_norm_after": torch.tensor([after]),
                    "clean_grad_norm": torch.tensor([float(g_clean.norm())])},
        )

    residual_test = "one-sided Fisher exact test: test errors of the unlearned vs the retrained model"

    def residual_pvalue(self, scores_unlearned: np.ndarray, scores_retrain: np.ndarray) -> float:
        from scipy import stats

        n = len(scores_unlearned)
        hu, hr = int(np.sum(scores_unlearned)), int(np.sum(scores_retrain))
        return float(stats.fisher_exact([[hu, n - hu], [hr, n - hr]], alternative="greater").pvalue)

    def scores(self, model: nn.Module, data: Dataset, poisoning: Poisoning, ctx: RunContext) -> np.ndarray:
        """1 for each misclassified test point, else 0."""
        pred = predict_logits(model, data.x_test, ctx.device).argmax(1)
        return (pred != data.y_test.cpu()).double().numpy()

    def evaluate(self, model: nn.Module, data: Dataset, poisoning: Poisoning, ctx: RunContext) -> dict[str, float]:
        return {"gc_test_error": float(self.scores(model, data, poisoning, ctx).mean())}
