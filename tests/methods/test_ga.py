"""GA: gradient ascent on the forget set; divergence is reported, not raised."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn.functional import cross_entropy

from unlearn_search.errors import UsageError
from unlearn_search.methods import METHODS, Budget
from unlearn_search.methods import ga as _ga  # noqa: F401  (registers "ga")

UNLIMITED = Budget(1.0, 1e9)


def _forget_loss(model: torch.nn.Module, splits) -> float:  # type: ignore[no-untyped-def]
    with torch.no_grad():
        return float(cross_entropy(model(splits.x_forget), splits.y_forget))


def _equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def _one_ascent_step_cfg(splits, lr: float = 1e-2):  # type: ignore[no-untyped-def]
    return METHODS.get("ga").config(lr=lr, optimizer="sgd", momentum=0.0, epochs=1, batch_size=splits.n_forget)


def test_one_ascent_step_raises_the_forget_loss(tiny_model, tiny_splits, ctx):
    m = METHODS.get("ga")
    res = m.run(tiny_model, tiny_splits, _one_ascent_step_cfg(tiny_splits), UNLIMITED, ctx)
    assert res.info["steps"] == 1
    assert _forget_loss(res.model, tiny_splits) > _forget_loss(tiny_model, tiny_splits) + 1e-3


def test_one_step_is_exactly_theta_plus_lr_times_the_forget_gradient(tiny_model, tiny_splits, ctx):
    lr = 1e-2
    ref = copy.deepcopy(tiny_model).train()
    loss = cross_entropy(ref(tiny_splits.x_forget), tiny_splits.y_forget)
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    res = METHODS.get("ga").run(tiny_model, tiny_splits, _one_ascent_step_cfg(tiny_splits, lr), UNLIMITED, ctx)
    for p0, g, p1 in zip(tiny_model.parameters(), grads, res.model.parameters(), strict=True):
        torch.testing.assert_close(p1.detach(), p0.detach() + lr * g, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("lr", [1e4, 1e30])
def test_divergence_is_reported_not_raised(tiny_model, tiny_splits, ctx, lr):
    m = METHODS.get("ga")
    seen: list[dict[str, float]] = []
    res = m.run(
        tiny_model,
        tiny_splits,
        m.config(lr=lr, epochs=20, batch_size=8),
        UNLIMITED,
        ctx,
        on_epoch=lambda _e, _m, v: seen.append(v),
    )
    assert res.info["diverged"] == 1
    assert res.info["epochs"] < 20  # stopped early
    assert all(torch.isfinite(torch.tensor(list(v.values()))).all() for v in seen)  # only finite epochs reported


def test_default_run_does_not_diverge_and_reports_ascent(tiny_model, tiny_splits, ctx):
    m = METHODS.get("ga")
    seen: list[dict[str, float]] = []
    res = m.run(tiny_model, tiny_splits, m.config(), UNLIMITED, ctx, on_epoch=lambda _e, _m, v: seen.append(v))
    assert res.info["diverged"] == 0 and res.info["epochs"] == 5 and len(seen) == 5
    assert seen[-1]["forget_ce"] > seen[0]["forget_ce"]
    assert seen[0]["loss"] == -seen[0]["forget_ce"]
    assert res.compute_used == 5 * tiny_splits.n_forget


def test_budget_within_one_batch_and_input_unchanged(tiny_model, tiny_splits, ctx):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    m = METHODS.get("ga")
    cfg = m.config(epochs=0, batch_size=8)
    budget = Budget(0.5, retrain_cost=203)  # limit 101.5: not a multiple of the batch
    res = m.run(tiny_model, tiny_splits, cfg, budget, ctx)
    assert budget.limit - cfg.batch_size < res.compute_used <= budget.limit
    assert res.info["diverged"] == 0
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(v, before[k])


def test_deterministic(tiny_model, tiny_splits, ctx):
    m = METHODS.get("ga")
    cfg = m.config(epochs=2, batch_size=8, lr=1e-3)
    a = m.run(tiny_model, tiny_splits, cfg, UNLIMITED, ctx)
    b = m.run(tiny_model, tiny_splits, cfg, UNLIMITED, ctx)
    assert _equal(a.model, b.model)
    assert not _equal(a.model, tiny_model)


@pytest.mark.parametrize(("field", "value"), [("lr", 0.0), ("batch_size", 0), ("epochs", -1), ("optimizer", "rms")])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(UsageError, match=field):
        METHODS.get("ga").config(**{field: value})


def test_search_space_is_valid_and_budget_driven():
    class Trial:
        def suggest_float(self, name: str, low: float, high: float, log: bool = False) -> float:
            assert name != "lr" or log
            return high

        def suggest_categorical(self, name: str, choices: list[str]) -> str:
            return choices[-1]

    m = METHODS.get("ga")
    params = m.search_space(Trial())  # type: ignore[misc]
    assert params["epochs"] == 0
    m.config(**params)
