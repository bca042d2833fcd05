"""Scenario configuration, hashing and sets; the calibrated default's acceptance numbers."""

from __future__ import annotations

import pytest
import torch

from unlearn_search.compute import retrain_cost
from unlearn_search.context import RunContext
from unlearn_search.errors import UsageError
from unlearn_search.scenario import ScenarioConfig, build_scenario, evaluate, train_references
from unlearn_search.training import TrainConfig


def test_hash_is_stable_and_sensitive():
    a = ScenarioConfig()
    assert a.hash == ScenarioConfig(attack_params={"eps": 0.5, "poison_fraction": 0.3}).hash  # defaults filled
    assert a.hash != ScenarioConfig(seed=1).hash
    assert a.hash != ScenarioConfig(attack_params={"eps": 0.6}).hash
    assert a.hash != ScenarioConfig(train=TrainConfig(epochs=61)).hash


@pytest.mark.parametrize(
    "kwargs, needle",
    [({"dataset": "mnist"}, "unknown dataset 'mnist'; valid: cifar10, digits"),
     ({"model": "vit"}, "unknown model 'vit'"),
     ({"attack": "x"}, "unknown attack 'x'"),
     ({"train": None}, None)],
)
def test_bad_scenarios(kwargs, needle):
    if needle is None:
        with pytest.raises(UsageError, match="epochs=0"):
            TrainConfig(epochs=0)
        return
    with pytest.raises(UsageError, match=needle):
        ScenarioConfig(**kwargs)


def test_sets_partition_the_training_data():
    cfg = ScenarioConfig()
    sc = build_scenario(cfg, RunContext(0))
    n = len(sc.data.x_train)
    xr, _ = sc.retain
    xf, yf = sc.forget
    assert len(xr) + len(xf) == n
    assert len(sc.corrupted[0]) == n
    # non-poison inputs and all labels reach training untouched
    assert torch.equal(sc.corrupted[0][: len(xr)], sc.data.x_train[sc.retain_mask])
    assert torch.equal(torch.sort(sc.corrupted[1]).values, torch.sort(sc.data.y_train).values)
    assert torch.equal(yf, sc.data.y_train[sc.poisoning.indices])
    assert sc.retrain_cost == retrain_cost(cfg.train.epochs, len(xr))


@pytest.fixture(scope="module")
def default_references():
    """The embedded default, trained once (about 10 s on 2 cores)."""
    cfg = ScenarioConfig()
    ctx = RunContext(seed=cfg.seed)
    sc = build_scenario(cfg, ctx)
    models = train_references(sc, ctx)
    return {role: evaluate(m, sc, ctx) for role, m in models.items()}


def test_default_scenario_meets_its_calibration(default_references):
    """Issue 2's acceptance: poisoned gus_z >= 5, retrained |gus_z| <= 3, both test accuracies >= 0.95."""
    p, r = default_references["poisoned"], default_references["retrain"]
    assert p["gus_z"] >= 5, p
    assert abs(r["gus_z"]) <= 3, r
    assert p["test_acc"] >= 0.95 and r["test_acc"] >= 0.95
    # the poisoned model fits its poisons; the retrained one never saw them
    assert p["forget_acc"] > r["forget_acc"]
