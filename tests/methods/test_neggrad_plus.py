"""NegGrad+: minimise beta*CE(retain) - (1-beta)*CE(forget), retain batches zipped with a cycled forget loader."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.functional import cross_entropy

from unlearn_search.errors import UsageError
from unlearn_search.methods import METHODS, Budget
from unlearn_search.methods import neggrad_plus as _ngp  # noqa: F401  (registers "neggrad_plus")

UNLIMITED = Budget(1.0, 1e9)


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(cross_entropy(model(x), y))


def _equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def _one_step_cfg(splits, beta: float, lr: float = 1e-2):  # type: ignore[no-untyped-def]
    """One SGD step without momentum on the whole retain set and the whole forget set."""
    return METHODS.get("neggrad_plus").config(
        beta=beta,
        lr=lr,
        optimizer="sgd",
        momentum=0.0,
        epochs=1,
        batch_size=splits.n_retain,
        forget_batch_size=splits.n_forget,
    )


def test_beta_zero_one_step_is_pure_ascent_on_forget(tiny_model, tiny_splits, ctx):
    s = tiny_splits
    res = METHODS.get("neggrad_plus").run(tiny_model, s, _one_step_cfg(s, beta=0.0), UNLIMITED, ctx)
    assert res.info["steps"] == 1
    assert _loss(res.model, s.x_forget, s.y_forget) > _loss(tiny_model, s.x_forget, s.y_forget) + 1e-3


@pytest.mark.parametrize("beta", [0.0, 0.7, 1.0])
def test_one_step_follows_the_weighted_gradient_exactly(tiny_model, tiny_splits, ctx, beta):
    # theta - lr * (beta * grad CE_retain - (1 - beta) * grad CE_forget); beta=0.7 tells beta from 1-beta.
    s, lr = tiny_splits, 1e-2
    ref = copy.deepcopy(tiny_model).train()
    params = list(ref.parameters())
    g_r = torch.autograd.grad(cross_entropy(ref(s.x_retain), s.y_retain), params)
    g_f = torch.autograd.grad(cross_entropy(ref(s.x_forget), s.y_forget), params)
    res = METHODS.get("neggrad_plus").run(tiny_model, s, _one_step_cfg(s, beta, lr), UNLIMITED, ctx)
    for p0, gr, gf, p1 in zip(tiny_model.parameters(), g_r, g_f, res.model.parameters(), strict=True):
        expected = p0.detach() - lr * (beta * gr - (1 - beta) * gf)
        torch.testing.assert_close(p1.detach(), expected, rtol=1e-5, atol=1e-7)


def test_beta_one_equals_gd_with_the_same_optimizer(tiny_model, tiny_splits, ctx):
    shared = dict(lr=0.05, optimizer="sgd", momentum=0.9, weight_decay=1e-3, epochs=2, batch_size=16)
    ngp, gd = METHODS.get("neggrad_plus"), METHODS.get("gd")
    a = ngp.run(tiny_model, tiny_splits, ngp.config(beta=1.0, forget_batch_size=8, **shared), UNLIMITED, ctx)
    b = gd.run(tiny_model, tiny_splits, gd.config(**shared), UNLIMITED, ctx)
    assert _equal(a.model, b.model)
    s = tiny_splits
    assert _loss(a.model, s.x_retain, s.y_retain) < _loss(tiny_model, s.x_retain, s.y_retain)


def test_each_step_costs_retain_plus_forget_batch(tiny_model, tiny_splits, ctx):
    m = METHODS.get("neggrad_plus")
    res = m.run(tiny_model, tiny_splits, m.config(epochs=1, batch_size=16, forget_batch_size=8), UNLIMITED, ctx)
    assert res.info["steps"] == tiny_splits.n_retain // 16
    assert res.compute_used == res.info["steps"] * (16 + 8)


def test_budget_within_one_step_and_input_unchanged(tiny_model, tiny_splits, ctx):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    m = METHODS.get("neggrad_plus")
    cfg = m.config(epochs=0, batch_size=16, forget_batch_size=8)
    budget = Budget(0.3, retrain_cost=10 * tiny_splits.n_retain)  # 480 units, 20 steps of 24: more than one epoch
    res = m.run(tiny_model, tiny_splits, cfg, budget, ctx)
    assert budget.limit - (16 + 8) < res.compute_used <= budget.limit
    assert res.info["epochs"] >= 1
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(v, before[k])


class _Recorder(nn.Module):
    """Wraps a model and records every input batch it sees (the record travels with the working copy)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.inner(x)


def test_forget_batches_cycle_through_the_whole_forget_set_reshuffled(tiny_model, tiny_splits, ctx):
    s = tiny_splits
    m = METHODS.get("neggrad_plus")
    res = m.run(_Recorder(tiny_model), s, m.config(epochs=1, batch_size=16, forget_batch_size=8), UNLIMITED, ctx)
    flat = s.x_forget.flatten(1)

    def forget_ids(batch: torch.Tensor) -> list[int] | None:
        hits = (batch.flatten(1)[:, None, :] == flat[None]).all(dim=2)
        return hits.float().argmax(dim=1).tolist() if bool(hits.any(dim=1).all()) else None

    batches = [ids for ids in map(forget_ids, res.model.seen) if ids is not None]
    assert len(batches) == res.info["steps"] == 10  # one forget batch per retain batch
    cycles = [
        [j for b in batches[i : i + 3] for j in b] for i in (0, 3, 6)
    ]  # 24 forget points / 8 = 3 batches per cycle
    for c in cycles:
        assert sorted(c) == list(range(s.n_forget))
    assert len({tuple(c) for c in cycles}) > 1  # reshuffled at each cycle


def test_deterministic(tiny_model, tiny_splits, ctx):
    m = METHODS.get("neggrad_plus")
    cfg = m.config(epochs=1, batch_size=32)
    a = m.run(tiny_model, tiny_splits, cfg, UNLIMITED, ctx)
    b = m.run(tiny_model, tiny_splits, cfg, UNLIMITED, ctx)
    assert _equal(a.model, b.model)


def test_on_epoch_reports_each_epoch(tiny_model, tiny_splits, ctx):
    seen: list[tuple[int, dict[str, float]]] = []
    m = METHODS.get("neggrad_plus")
    m.run(
        tiny_model,
        tiny_splits,
        m.config(epochs=2, batch_size=32),
        UNLIMITED,
        ctx,
        on_epoch=lambda e, _m, v: seen.append((e, v)),
    )
    assert [e for e, _ in seen] == [0, 1]
    v = seen[0][1]
    assert v["loss"] == pytest.approx(0.95 * v["retain_ce"] - 0.05 * v["forget_ce"], rel=1e-5)


@pytest.mark.parametrize(("field", "value"), [("beta", 1.5), ("beta", -0.1), ("forget_batch_size", 0), ("lr", -1.0)])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(UsageError, match=field):
        METHODS.get("neggrad_plus").config(**{field: value})


def test_defaults_follow_the_reference_and_search_space_is_valid():
    m = METHODS.get("neggrad_plus")
    cfg = m.config()
    assert (cfg.beta, cfg.lr, cfg.optimizer, cfg.epochs) == (0.95, 0.01, "sgd", 10)

    class Trial:
        def suggest_float(self, name: str, low: float, high: float, log: bool = False) -> float:
            assert name != "lr" or log
            return (low + high) / 2

        def suggest_categorical(self, name: str, choices: list[str]) -> str:
            return choices[0]

    params = m.search_space(Trial())  # type: ignore[misc]
    assert params["epochs"] == 0 and "beta" in params
    m.config(**params)
