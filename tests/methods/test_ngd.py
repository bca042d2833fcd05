"""NGD: GD plus N(0, sigma^2) noise on every trainable parameter after each step, from its own generator."""

from __future__ import annotations

import copy

import pytest
import torch

from unlearn_search.context import RunContext
from unlearn_search.errors import UsageError
from unlearn_search.methods import METHODS, Budget
from unlearn_search.methods import ngd as _ngd  # noqa: F401  (registers "ngd")
from unlearn_search.models import model_blocks

UNLIMITED = Budget(1.0, 1e9)


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _run_pair(tiny_model, tiny_splits, ctx, **kw):  # type: ignore[no-untyped-def]
    """(NGD result, GD result) with the same shared config fields."""
    ngd, gd = METHODS.get("ngd"), METHODS.get("gd")
    sigma = kw.pop("sigma")
    r_ngd = ngd.run(tiny_model, tiny_splits, ngd.config(sigma=sigma, **kw), UNLIMITED, ctx)
    r_gd = gd.run(tiny_model, tiny_splits, gd.config(**kw), UNLIMITED, ctx)
    return r_ngd, r_gd


def test_sigma_zero_is_gd_bit_for_bit(tiny_model, tiny_splits, ctx):
    r_ngd, r_gd = _run_pair(tiny_model, tiny_splits, ctx, sigma=0.0, epochs=2, batch_size=16)
    assert _equal(r_ngd.model, r_gd.model)
    assert r_ngd.compute_used == r_gd.compute_used


def test_noise_draws_do_not_disturb_the_shuffle_order(tiny_model, tiny_splits, ctx):
    # sigma=1e-30 is below float32 resolution of every weight, so the weights equal GD's exactly, unless the noise
    # is drawn from the shuffle generator (different batch order) or scaled wrongly.
    r_ngd, r_gd = _run_pair(tiny_model, tiny_splits, ctx, sigma=1e-30, epochs=2, batch_size=16)
    assert _equal(r_ngd.model, r_gd.model)


def test_noise_is_gaussian_with_std_sigma_on_every_parameter(tiny_model, tiny_splits, ctx):
    # One step (one batch = whole retain set): NGD - GD is exactly the noise added after that step.
    sigma = 0.05
    r_ngd, r_gd = _run_pair(tiny_model, tiny_splits, ctx, sigma=sigma, epochs=1, batch_size=tiny_splits.n_retain)
    diffs = [(p - q).detach().flatten() for p, q in zip(r_ngd.model.parameters(), r_gd.model.parameters(), strict=True)]
    for d in diffs:
        assert (d != 0).all()  # every parameter got noise
    d = torch.cat(diffs)
    assert d.numel() > 10_000
    assert abs(float(d.mean())) < 0.02 * sigma
    assert abs(float(d.std()) / sigma - 1) < 0.02  # std sigma, not variance sigma, not lr*sigma


def test_frozen_parameters_get_no_noise(tiny_model, tiny_splits, ctx):
    model = copy.deepcopy(tiny_model)
    first = model_blocks(model)[0]
    for p in first.parameters():
        p.requires_grad_(False)
    before = {k: v.clone() for k, v in first.state_dict().items()}
    m = METHODS.get("ngd")
    res = m.run(model, tiny_splits, m.config(sigma=0.1, epochs=1, weight_decay=1e-2), UNLIMITED, ctx)
    after = model_blocks(res.model)[0].state_dict()
    for k, v in before.items():
        assert torch.equal(after[k], v)
    assert not _equal(res.model, model)


def test_deterministic_under_a_seed_and_seed_dependent(tiny_model, tiny_splits, ctx):
    m = METHODS.get("ngd")
    cfg = m.config(sigma=1e-2, epochs=1, batch_size=32)
    a = m.run(tiny_model, tiny_splits, cfg, UNLIMITED, ctx)
    b = m.run(tiny_model, tiny_splits, cfg, UNLIMITED, ctx)
    c = m.run(tiny_model, tiny_splits, cfg, UNLIMITED, RunContext(seed=1, device=ctx.device))
    assert _equal(a.model, b.model)
    assert not _equal(a.model, c.model)


def test_budget_within_one_batch_and_input_unchanged(tiny_model, tiny_splits, ctx):
    before = _params(tiny_model)
    m = METHODS.get("ngd")
    cfg = m.config(epochs=0, batch_size=16, sigma=1e-3)
    budget = Budget(0.25, retrain_cost=10 * tiny_splits.n_retain)
    res = m.run(tiny_model, tiny_splits, cfg, budget, ctx)
    assert budget.limit - cfg.batch_size < res.compute_used <= budget.limit
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(v, before[k])


def test_on_epoch_called_once_per_epoch(tiny_model, tiny_splits, ctx):
    seen: list[int] = []
    m = METHODS.get("ngd")
    res = m.run(tiny_model, tiny_splits, m.config(epochs=3), UNLIMITED, ctx, on_epoch=lambda e, _m, v: seen.append(e))
    assert seen == [0, 1, 2] and res.info["epochs"] == 3


@pytest.mark.parametrize(("field", "value"), [("sigma", -1e-3), ("sigma", float("nan")), ("lr", 0.0)])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(UsageError, match=field):
        METHODS.get("ngd").config(**{field: value})


class _LowTrial:
    """Stub trial: lowest value of each range, first choice of each categorical."""

    def __init__(self) -> None:
        self.log: dict[str, bool] = {}

    def suggest_float(self, name: str, low: float, high: float, log: bool = False) -> float:
        self.log[name] = log
        return low

    def suggest_int(self, name: str, low: int, high: int, log: bool = False) -> int:
        return low

    def suggest_categorical(self, name: str, choices: list[str]) -> str:
        return choices[0]


def test_search_space_adds_log_uniform_sigma_to_gds():
    m = METHODS.get("ngd")
    trial = _LowTrial()
    params = m.search_space(trial)  # type: ignore[misc]
    assert params["epochs"] == 0 and "sigma" in params and trial.log["sigma"] and trial.log["lr"]
    assert set(METHODS.get("gd").search_space(_LowTrial())) < set(params)  # type: ignore[misc]
    m.config(**params)
