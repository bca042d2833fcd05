"""Every registered method honours the contract (methods/__init__.py); new methods are picked up automatically."""

from __future__ import annotations

import optuna
import pytest
import torch

from unlearn_search.methods import METHODS, Budget

ALL = METHODS.names()


def _equal_models(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", ALL)
def test_defaults_construct_and_summary_is_documented(name):
    m = METHODS.get(name)
    m.config()
    assert m.summary and m.summary != name


@pytest.mark.parametrize("name", ALL)
def test_runs_leaves_input_unchanged_respects_budget_and_is_seeded(name, tiny_model, tiny_splits, ctx):
    m = METHODS.get(name)
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    budget = Budget(0.5, retrain_cost=4.0 * tiny_splits.n_retain)
    epochs_seen: list[int] = []
    a = m.run(tiny_model, tiny_splits, m.config(), budget, ctx, on_epoch=lambda e, mdl, v: epochs_seen.append(e))
    b = m.run(tiny_model, tiny_splits, m.config(), budget, ctx)
    assert all(torch.equal(v, before[k]) for k, v in tiny_model.state_dict().items()), "input model mutated"
    assert a.model is not tiny_model
    assert 0 <= a.compute_used <= budget.limit + 1e-9
    assert _equal_models(a.model, b.model), "same seed must give the same model"
    assert not a.model.training, "methods return models in eval mode"
    out = a.model(tiny_splits.x_retain[:3])
    assert out.shape == (3, 4) and torch.isfinite(out).all()
    assert epochs_seen == sorted(epochs_seen)


@pytest.mark.parametrize("name", ALL)
def test_search_space_yields_valid_configs(name):
    m = METHODS.get(name)
    assert m.search_space is not None
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        m.config(**m.search_space(study.ask()))


def test_unknown_parameter_names_the_valid_ones():
    from unlearn_search.errors import UsageError

    with pytest.raises(UsageError, match=r"unknown parameter\(s\) alpha for method 'gd'; valid: batch_size, epochs"):
        METHODS.get("gd").config(alpha=1.0)
