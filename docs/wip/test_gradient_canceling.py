"""Gradient Canceling: exact budget, valid inputs, the gradient at θ_p is cancelled, and the accuracy drop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearn_search.attacks import ATTACKS
from unlearn_search.context import RunContext
from unlearn_search.data import load_dataset
from unlearn_search.errors import UsageError
from unlearn_search.scenario import ScenarioConfig, build_scenario, evaluate, train_references
from unlearn_search.training import TrainConfig, accuracy


def _attack(**params):
    cls = ATTACKS.get("gradient_canceling")
    return cls(cls.config_from(params))


@pytest.fixture(scope="module")
def crafted():
    data = load_dataset("digits")
    attack = _attack(poison_fraction=0.2, target_flip=0.6, steps=150, lr=0.1, target_epochs=10)
    return data, attack, attack.craft(data, RunContext(seed=1))


def test_budget_range_and_added_points(crafted):
    data, _, p = crafted
    assert p.n_poison == round(0.2 * len(data.x_train)) and len(p.y_poison) == p.n_poison
    assert p.indices.numel() == 0  # poisons are added; nothing is removed
    assert p.x_poison.shape[1:] == data.x_train.shape[1:]
    assert float(p.x_poison.min()) >= 0.0 and float(p.x_poison.max()) <= 1.0
    assert torch.equal(data.x_train, load_dataset("digits").x_train)  # the clean set is not modified


def test_crafting_cancels_the_gradient_at_the_target(crafted):
    _, _, p = crafted
    before, after = p.arrays["grad_norm_before"].item(), p.arrays["grad_norm_after"].item()
    assert after < 0.8 * before  # substantially lower, not a rounding-level change


def test_scores_and_fisher_residual(crafted):
    _, attack, _ = crafted
    ctx = RunContext(0)
    sc = build_scenario(ScenarioConfig(model="linear", attack="gradient_canceling",
                                       attack_params={"steps": 0, "target_epochs": 1}), ctx)
    assert sc.retain_mask.all()  # retrain reference = the clean training set
    assert attack.residual_pvalue(np.ones(100), np.zeros(100)) < 1e-6
    assert attack.residual_pvalue(np.zeros(100), np.ones(100)) > 0.99


@pytest.fixture(scope="module")
def gc_models():
    cfg = ScenarioConfig(model="linear", attack="gradient_canceling", train=TrainConfig(epochs=20))
    ctx = RunContext(0)
    sc = build_scenario(cfg, ctx)
    return sc, train_references(sc, ctx), ctx


@pytest.mark.xfail(strict=True, reason="measured: at the default 3% budget the linear model's test accuracy "
                   "does not drop (0.914 clean vs 0.914 poisoned, seed 0); see the attack's docstring")
def test_attack_lowers_test_accuracy_of_the_linear_model(gc_models):
    sc, models, ctx = gc_models
    acc = {k: accuracy(m, sc.data.x_test, sc.data.y_test, ctx.device) for k, m in models.items()}
    assert acc["poisoned"] < acc["retrain"] - 0.05


def test_retrain_reference_matches_clean_baseline(gc_models):
    sc, models, ctx = gc_models
    err = {k: evaluate(m, sc, ctx)["gc_test_error"] for k, m in models.items()}
    assert err["retrain"] < 0.15  # a clean logistic regression on digits: about 0.9 accuracy
    scores = sc.attack.scores(models["retrain"], sc.data, sc.poisoning, ctx)
    assert set(scores.tolist()) <= {0.0, 1.0} and scores.mean() == pytest.approx(err["retrain"])


@pytest.mark.parametrize(
    "params, needle",
    [({"poison_fraction": 0.0}, "poison_fraction=0.0"), ({"target_flip": 0.0}, "target_flip=0.0"),
     ({"steps": -1}, "steps=-1"), ({"lr": 0.0}, "lr=0.0"), ({"target_epochs": 0}, "target_epochs=0"),
     ({"model": "nope"}, "unknown model 'nope'")],
)
def test_bad_parameters(params, needle):
    with pytest.raises(UsageError, match=needle):
        _attack(**params)
