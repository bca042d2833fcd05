"""Witches' Brew: clean-label poisons inside the ε-ball, gradient matching does what it optimises, the metric is
the clean rate on models that never saw the poisons, and the poisons make a victim trained from scratch flip."""

from __future__ import annotations

import pytest
import torch

from unlearn_search.attacks import ATTACKS, Poisoning, Victim
from unlearn_search.attacks.witches_brew import _flat_grad, matching_loss
from unlearn_search.context import RunContext
from unlearn_search.data import load_dataset
from unlearn_search.errors import UsageError
from unlearn_search.models import ModelSpec, create_model
from unlearn_search.scenario import ScenarioConfig, build_scenario, evaluate
from unlearn_search.training import TrainConfig, train

RECIPE = TrainConfig(epochs=30)


def _attack(**params):
    cls = ATTACKS.get("witches_brew")
    return cls(cls.config_from(params))


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def victim(digits):
    return Victim(ModelSpec("mlp", digits.input_shape, digits.n_classes), RECIPE)


@pytest.fixture(scope="module")
def crafted(digits, victim):
    attack = _attack(eps=0.25, n_targets=2, steps=40, restarts=2)
    return attack, attack.craft(digits, RunContext(seed=5), victim)


def test_clean_label_inside_the_ball(digits, crafted):
    attack, p = crafted
    adv = int(p.arrays["adv_class"][0])
    assert p.n_poison == round(0.05 * len(digits.x_train))
    assert torch.equal(p.y_poison, digits.y_train[p.indices])  # labels unchanged
    assert (p.y_poison == adv).all()  # the poisons come from the adversarial class
    delta = p.x_poison - digits.x_train[p.indices]
    assert delta.abs().max() <= attack.cfg.eps + 1e-6
    assert delta.abs().max() > attack.cfg.eps / 2  # it did perturb
    assert p.x_poison.min() >= 0 and p.x_poison.max() <= 1
    targets = p.arrays["targets"]
    assert len(targets) == 2 and (digits.y_test[targets] == int(p.arrays["target_class"][0])).all()
    assert adv != int(p.arrays["target_class"][0])


def test_matching_lowers_the_loss_it_optimises(digits, crafted):
    """Recompute 1 - cos(g_target, g_poison) independently on the attacker's surrogate: clean vs crafted."""
    attack, p = crafted
    ctx = RunContext(seed=5)
    victim = Victim(ModelSpec("mlp", digits.input_shape, digits.n_classes), RECIPE)
    (surrogate,) = attack.surrogates(digits.x_train, digits.y_train, victim, ctx)
    adv = int(p.arrays["adv_class"][0])
    x_t = digits.x_test[p.arrays["targets"]]
    g_t = _flat_grad(surrogate, x_t, torch.full((len(x_t),), adv), create_graph=False)
    clean = float(matching_loss([surrogate], [g_t], digits.x_train[p.indices], p.y_poison).detach())
    after = float(matching_loss([surrogate], [g_t], p.x_poison, p.y_poison).detach())
    assert after < 0.5 * clean
    assert p.arrays["matching_loss"][0].item() == pytest.approx(clean, abs=1e-4)


def test_round_trip_and_seeded(digits, victim, crafted):
    _, p = crafted
    back = Poisoning.from_bytes(p.to_bytes())
    assert torch.equal(back.arrays["targets"], p.arrays["targets"]) and torch.equal(back.x_poison, p.x_poison)
    again = _attack(eps=0.25, n_targets=2, steps=40, restarts=2).craft(digits, RunContext(seed=5), victim)
    assert torch.equal(again.x_poison, p.x_poison)


def test_metric_on_models_that_never_saw_the_poisons_is_the_clean_rate(digits, crafted):
    """Clean models from two fresh seeds: the targets (correctly classified by the surrogate) stay unflipped."""
    attack, p = crafted
    ctx = RunContext(seed=0)
    spec = ModelSpec("mlp", digits.input_shape, digits.n_classes)
    for seed in (11, 12):
        model = train(create_model(spec, seed=seed), digits.x_train, digits.y_train, RECIPE, RunContext(seed))
        m = attack.evaluate(model, digits, p, ctx)
        assert m["target_success"] == 0.0
        assert m["target_adv_prob"] < 0.1
        assert attack.scores(model, digits, p, ctx).tolist() == [0.0, 0.0]


def test_poisons_flip_the_target_of_a_victim_trained_from_scratch():
    """The defining effect, on the default scenario recipe (seed 0, shortened crafting): the poisoned victim —
    trained from its own seed, unknown to the attacker — classifies the target as the adversarial class; the
    retrained one (same seed, poisons removed) does not."""
    cfg = ScenarioConfig(attack="witches_brew", attack_params={"steps": 100, "restarts": 1}, seed=0)
    ctx = RunContext(seed=0)
    sc = build_scenario(cfg, ctx)
    poisoned = train(create_model(sc.spec, seed=0), *sc.corrupted, cfg.train, ctx.child(11))
    retrained = train(create_model(sc.spec, seed=0), *sc.retain, cfg.train, ctx.child(11))
    assert evaluate(poisoned, sc, ctx)["target_success"] == 1.0
    assert evaluate(retrained, sc, ctx)["target_success"] == 0.0


@pytest.mark.parametrize(
    "params, needle",
    [({"eps": 0.0}, "eps=0.0"), ({"n_targets": 0}, "n_targets=0"), ({"steps": 0}, "steps=0"),
     ({"adversarial": "nearest"}, "unknown adversarial 'nearest'"), ({"poison_fraction": 1.5}, "poison_fraction=1.5")],
)
def test_bad_config(params, needle):
    with pytest.raises(UsageError, match=needle):
        ATTACKS.get("witches_brew").config_from(params)


def test_bad_budgets_are_one_line_usage_errors(digits, victim):
    with pytest.raises(UsageError, match="victim"):
        _attack().craft(digits, RunContext(0))
    with pytest.raises(UsageError, match=r"poison_fraction=0.5 gives 718 poisons; valid: 1\.\.\d+"):
        _attack(poison_fraction=0.5, steps=1, restarts=1).craft(digits, RunContext(0), victim)
    with pytest.raises(UsageError, match=r"n_targets=500 but only \d+ test points"):
        _attack(n_targets=500, steps=1, restarts=1).craft(digits, RunContext(0), victim)
