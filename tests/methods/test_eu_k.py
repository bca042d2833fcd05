"""EU-k: exactly the last k units get fresh weights and train; everything else stays bit-identical."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from unlearn_search.context import RunContext
from unlearn_search.errors import UsageError
from unlearn_search.methods import METHODS, Budget, eu_k
from unlearn_search.methods._loop import reinitialise
from unlearn_search.models import last_k_units, model_units

NO_STEP = Budget(1.0, retrain_cost=1.0)  # 1 unit < one batch: the budget allows no training step at all
PLENTY = Budget(1.0, retrain_cost=1e9)


def _fresh_last_k(model: nn.Module, k: int, ctx: RunContext) -> list[nn.Module]:
    """What the last k units should hold before training: fresh weights seeded from the run context."""
    ref = copy.deepcopy(model)
    last = last_k_units(ref, k)
    reinitialise(nn.ModuleList(last), ctx.child(eu_k.REINIT_SEED_OFFSET).seed)
    return last


def _frozen_and_last(model: nn.Module, k: int) -> tuple[list[nn.Module], list[nn.Module]]:
    units = model_units(model)
    return [b for u in units[:-k] for b in u], [b for u in units[-k:] for b in u]


def _states(blocks: list[nn.Module]) -> list[dict[str, torch.Tensor]]:
    return [{k: v.clone() for k, v in b.state_dict().items()} for b in blocks]


def _retain_loss(model: nn.Module, splits) -> float:  # type: ignore[no-untyped-def]
    with torch.no_grad():
        return float(nn.functional.cross_entropy(model.eval()(splits.x_retain), splits.y_retain))


@pytest.mark.parametrize(("fixture", "k"), [("tiny_model", 1), ("tiny_cnn", 1)])
def test_only_last_k_units_change_and_the_rest_is_bit_identical(fixture, k, tiny_splits, ctx, request):
    model = request.getfixturevalue(fixture)
    m = METHODS.get("eu_k")
    cfg = m.config(k=k, epochs=2)
    assert cfg.weight_decay > 0 and cfg.momentum > 0  # both would move frozen weights if they reached them
    res = m.run(model, tiny_splits, cfg, PLENTY, ctx)
    (frozen0, last0), (frozen1, last1) = _frozen_and_last(model, k), _frozen_and_last(res.model, k)
    assert res.info["epochs"] == 2 and res.info["k"] == k
    assert len(last0) == 2  # k = 1: the second block with the head
    for b0, b1 in zip(frozen0, frozen1, strict=True):
        for (name, v0), v1 in zip(b0.state_dict().items(), b1.state_dict().values(), strict=True):
            assert torch.equal(v0, v1), name
    for b0, b1 in zip(last0, last1, strict=True):
        for (name, p0), p1 in zip(b0.named_parameters(), b1.parameters(), strict=True):
            assert not torch.equal(p0, p1), name


@pytest.mark.parametrize(("fixture", "k"), [("tiny_model", 1), ("tiny_cnn", 1)])
def test_last_k_units_are_fresh_weights_not_the_old_ones(fixture, k, tiny_splits, ctx, request):
    model = request.getfixturevalue(fixture)
    m = METHODS.get("eu_k")
    res = m.run(model, tiny_splits, m.config(k=k), NO_STEP, ctx)
    assert res.compute_used == 0 and res.info["epochs"] == 0
    expected = _fresh_last_k(model, k, ctx)
    for b_exp, b_old, b_new in zip(expected, last_k_units(model, k), last_k_units(res.model, k), strict=True):
        for p_exp, p_old, p_new in zip(b_exp.parameters(), b_old.parameters(), b_new.parameters(), strict=True):
            assert torch.equal(p_new, p_exp)
            assert (p_new - p_old).norm() > 0.3 * p_old.norm()  # fresh weights, far from the poisoned ones


def test_training_starts_from_the_fresh_weights(tiny_model, tiny_splits, ctx):
    """With a vanishing lr one epoch of training leaves the fresh weights, not the poisoned ones."""
    m = METHODS.get("eu_k")
    res = m.run(tiny_model, tiny_splits, m.config(lr=1e-9, epochs=1), PLENTY, ctx)
    assert res.info["epochs"] == 1
    fresh = nn.ModuleList(_fresh_last_k(tiny_model, 1, ctx))
    old, new = nn.ModuleList(last_k_units(tiny_model, 1)), nn.ModuleList(last_k_units(res.model, 1))
    for p_fresh, p_old, p_new in zip(fresh.parameters(), old.parameters(), new.parameters(), strict=True):
        assert torch.allclose(p_new, p_fresh, atol=1e-6)
        assert (p_new - p_old).norm() > 0.3 * p_old.norm()


def test_training_fits_the_fresh_block_to_the_retain_set(tiny_model, tiny_splits, ctx):
    m = METHODS.get("eu_k")
    untrained = m.run(tiny_model, tiny_splits, m.config(), NO_STEP, ctx).model
    # k = 1 re-initialises two layers of the MLP (its last unit): 10 epochs to fit them, not 5 as for the head alone
    trained = m.run(tiny_model, tiny_splits, m.config(epochs=10, lr=0.05), PLENTY, ctx).model
    assert _retain_loss(trained, tiny_splits) < 0.85 * _retain_loss(untrained, tiny_splits)


def test_seeded_from_the_context_and_deterministic(tiny_model, tiny_splits, ctx):
    m = METHODS.get("eu_k")
    cfg = m.config(epochs=1)
    a = m.run(tiny_model, tiny_splits, cfg, PLENTY, ctx).model.state_dict()
    b = m.run(tiny_model, tiny_splits, cfg, PLENTY, ctx).model.state_dict()
    c = m.run(tiny_model, tiny_splits, cfg, PLENTY, RunContext(seed=1)).model.state_dict()
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not torch.equal(a["blocks.2.weight"], c["blocks.2.weight"])
    global_state = torch.get_rng_state()
    m.run(tiny_model, tiny_splits, m.config(), NO_STEP, ctx)
    assert torch.equal(torch.get_rng_state(), global_state)  # the global RNG is never used


def test_config_validation_names_the_field():
    m = METHODS.get("eu_k")
    cfg = m.config()
    assert (cfg.k, cfg.lr, cfg.optimizer, cfg.momentum, cfg.weight_decay, cfg.epochs, cfg.batch_size) == (
        1, 0.01, "sgd", 0.9, 5e-4, 10, 64)
    for bad, field in [({"k": 0}, "k"), ({"lr": 0.0}, "lr"), ({"weight_decay": -1.0}, "weight_decay"),
                       ({"optimizer": "lbfgs"}, "optimizer"), ({"batch_size": 0}, "batch_size")]:
        with pytest.raises(UsageError, match=field):
            m.config(**bad)


def test_stops_within_one_batch_of_budget_and_reports_epochs(tiny_model, tiny_splits, ctx):
    m = METHODS.get("eu_k")
    cfg = m.config(epochs=0, batch_size=16)
    budget = Budget(0.25, retrain_cost=10 * tiny_splits.n_retain)
    seen: list[tuple[int, float]] = []
    res = m.run(tiny_model, tiny_splits, cfg, budget, ctx, on_epoch=lambda e, mod, v: seen.append((e, v["loss"])))
    assert budget.limit - cfg.batch_size < res.compute_used <= budget.limit
    assert [e for e, _ in seen] == list(range(int(res.info["epochs"])))


def test_search_space_draws_k_and_lr_and_runs_on_budget():
    """Without the tuner's ``max_k`` attribute, k is drawn for our MLP and CNN: 1..1 (never every unit)."""
    class Trial:
        def suggest_int(self, name, low, high):  # type: ignore[no-untyped-def]
            assert (name, low, high) == ("k", 1, 1)
            return high

        def suggest_float(self, name, low, high, log=False):  # type: ignore[no-untyped-def]
            assert name == "lr" and log
            return low

    m = METHODS.get("eu_k")
    assert m.search_space is not None
    params = m.search_space(Trial())
    assert params["epochs"] == 0
    assert m.config(**params).k == 1


def test_search_space_k_range_follows_the_models_units():
    """The tuner records the model's max_k (units - 1) on the trial; k is searched over 1..max_k."""
    import optuna

    from unlearn_search.models import ModelSpec, create_model, max_k

    n = max_k(create_model(ModelSpec("resnet18_cifar", (3, 32, 32), 10), seed=0))
    assert n == 3
    study = optuna.create_study()
    trial = study.ask()
    trial.set_user_attr("max_k", n)
    METHODS.get("eu_k").search_space(trial)  # type: ignore[misc]
    assert study.trials[0].distributions["k"].high == 3
