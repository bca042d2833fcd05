"""Backdoor (BadNets patch): exact trigger placement, relabelling, and that the attack works and only when seen."""

from __future__ import annotations

import pytest
import torch

from unlearn_search.attacks import ATTACKS
from unlearn_search.attacks.backdoor import apply_trigger
from unlearn_search.context import RunContext
from unlearn_search.data import load_dataset
from unlearn_search.errors import UsageError
from unlearn_search.models import create_model
from unlearn_search.scenario import ScenarioConfig, build_scenario, evaluate, train_references
from unlearn_search.training import TrainConfig, train


def _attack(**params):
    cls = ATTACKS.get("backdoor")
    return cls(cls.config_from(params))


def test_trigger_is_applied_exactly_to_the_chosen_indices():
    data = load_dataset("digits")
    attack = _attack(poison_fraction=0.05, target_class=3, patch_size=2, patch_value=1.0)
    p = attack.craft(data, RunContext(seed=4))
    assert p.n_poison == round(0.05 * len(data.x_train))
    assert len(set(p.indices.tolist())) == p.n_poison
    assert (data.y_train[p.indices] != 3).all()  # drawn from the other classes...
    assert (p.y_poison == 3).all()  # ...and relabelled to the target
    patch = torch.zeros(8, 8, dtype=torch.bool)
    patch[-2:, -2:] = True
    orig = data.x_train[p.indices]
    assert torch.equal(p.x_poison[..., patch], torch.ones_like(p.x_poison[..., patch]))
    assert torch.equal(p.x_poison[..., ~patch], orig[..., ~patch])  # nothing else touched
    assert torch.equal(data.x_train, load_dataset("digits").x_train)  # the clean set is not modified


def test_apply_trigger_copies():
    x = torch.zeros(2, 1, 4, 4)
    y = apply_trigger(x, 1, 0.5)
    assert x.sum() == 0 and y.sum() == 1.0 and y[0, 0, 3, 3] == 0.5


@pytest.fixture(scope="module")
def backdoor_models():
    cfg = ScenarioConfig(attack="backdoor", train=TrainConfig(epochs=30))
    ctx = RunContext(0)
    sc = build_scenario(cfg, ctx)
    models = train_references(sc, ctx)
    clean = create_model(sc.spec, seed=0)
    train(clean, sc.data.x_train, sc.data.y_train, cfg.train, ctx.child(11))
    return sc, models, clean, ctx


def test_backdoor_works_only_on_the_model_that_saw_it(backdoor_models):
    sc, models, clean, ctx = backdoor_models
    asr = {k: evaluate(m, sc, ctx)["backdoor_asr"] for k, m in models.items()}
    asr_clean = sc.attack.evaluate(clean, sc.data, sc.poisoning, ctx)["backdoor_asr"]
    assert asr["poisoned"] > 0.5 > 0.1 > asr_clean  # far above the clean model's rate
    assert abs(asr["retrain"] - asr_clean) < 0.05  # never saw the trigger: the clean baseline within noise
    scores = sc.attack.scores(models["poisoned"], sc.data, sc.poisoning, ctx)
    assert set(scores.tolist()) <= {0.0, 1.0} and scores.mean() == pytest.approx(asr["poisoned"])


@pytest.mark.parametrize(
    "params, needle",
    [({"target_class": 10}, "target_class=10 is out of range; valid: 0..9"),
     ({"patch_size": 9}, "patch_size=9"),
     ({"trigger_word": "x"}, "unknown attack parameter(s) trigger_word for attack 'backdoor'")],
)
def test_bad_parameters(params, needle):
    with pytest.raises(UsageError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        _attack(**params).craft(load_dataset("digits"), RunContext(0))
