"""NegGrad+ as the SCRUB reference runs it: minimise beta*(CE(retain) + l2/2*|theta - theta0|^2) - (1-beta)*CE(forget)
in eval mode, retain batches zipped with itertools.cycle(forget loader) (the first pass replayed within an epoch)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.functional import cross_entropy

from unlearn_search.errors import UsageError
from unlearn_search.methods import METHODS, Budget
from unlearn_search.methods import neggrad_plus as _ngp  # noqa: F401  (registers "neggrad_plus")
from unlearn_search.models.small import BlockNet

UNLIMITED = Budget(1.0, 1e9)


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(cross_entropy(model(x), y))


def _equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def _one_step_cfg(splits, beta: float, lr: float = 1e-2, epochs: int = 1, **extra):  # type: ignore[no-untyped-def]
    """One SGD step (per epoch) without momentum on the whole retain set and the whole forget set."""
    return METHODS.get("neggrad_plus").config(
        beta=beta,
        lr=lr,
        optimizer="sgd",
        momentum=0.0,
        epochs=epochs,
        batch_size=splits.n_retain,
        forget_batch_size=splits.n_forget,
        **extra,
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


@pytest.mark.parametrize("beta", [0.7, 1.0])
def test_l2_pull_towards_the_starting_weights_by_hand(tiny_model, tiny_splits, ctx, beta):
    """Two full-batch SGD steps. Step 1 starts at theta0, where the pull's gradient is zero; step 2 adds
    beta * l2_weight * (theta1 - theta0): the gradient of beta * (l2_weight / 2) * |theta - theta0|^2."""
    s, lr, l2 = tiny_splits, 0.05, 0.5
    ref = copy.deepcopy(tiny_model).eval()
    params = list(ref.parameters())
    theta0 = [p.detach().clone() for p in params]

    def step() -> None:
        g_r = torch.autograd.grad(cross_entropy(ref(s.x_retain), s.y_retain), params)
        g_f = torch.autograd.grad(cross_entropy(ref(s.x_forget), s.y_forget), params)
        with torch.no_grad():
            for p, p0, gr, gf in zip(params, theta0, g_r, g_f, strict=True):
                pull = l2 * (p - p0)  # zero at theta0, grows with the distance
                p -= lr * (beta * (gr + pull) - (1 - beta) * gf)

    step()
    step()
    m = METHODS.get("neggrad_plus")
    res = m.run(tiny_model, s, _one_step_cfg(s, beta, lr, epochs=2, l2_weight=l2), UNLIMITED, ctx)
    assert res.info["steps"] == 2
    for p_exp, p1 in zip(params, res.model.parameters(), strict=True):
        torch.testing.assert_close(p1.detach(), p_exp.detach(), rtol=1e-5, atol=1e-7)
    without = m.run(tiny_model, s, _one_step_cfg(s, beta, lr, epochs=2, l2_weight=0.0), UNLIMITED, ctx)
    diff = max(float((a - b).detach().abs().max())
               for a, b in zip(res.model.parameters(), without.model.parameters(), strict=True))
    assert diff > 1e-6  # the pull changed the second step


def test_eval_mode_keeps_batchnorm_statistics_and_turns_dropout_off(tiny_splits, ctx):
    """The reference unlearns with model.eval(): running statistics untouched, dropout off during every step."""
    modes: list[bool] = []

    class Probe(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            modes.append(self.training)
            return x

    torch.manual_seed(0)
    model = BlockNet([nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(),
                                    nn.Dropout(0.5), Probe()), nn.Linear(16, 4)])
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    m = METHODS.get("neggrad_plus")
    res = m.run(model, tiny_splits, m.config(epochs=2, batch_size=32, forget_batch_size=8), UNLIMITED, ctx)
    assert res.info["steps"] == 10 and len(modes) == 20  # a retain and a forget forward per step
    assert not any(modes)
    after = res.model.state_dict()
    for k, v in stats.items():
        assert torch.equal(after[k], v), k
    # eval mode with dropout off: one full-batch step is deterministic, as the hand-computed eval-mode gradient
    s = tiny_splits
    cfg = _one_step_cfg(s, 0.9, 0.05)
    a = m.run(model, s, cfg, UNLIMITED, ctx).model
    ref = copy.deepcopy(model).eval()
    params = list(ref.parameters())
    g_r = torch.autograd.grad(cross_entropy(ref(s.x_retain), s.y_retain), params)
    g_f = torch.autograd.grad(cross_entropy(ref(s.x_forget), s.y_forget), params)
    for p0, gr, gf, p1 in zip(model.parameters(), g_r, g_f, a.parameters(), strict=True):
        torch.testing.assert_close(p1.detach(), p0.detach() - 0.05 * (0.9 * gr - 0.1 * gf), rtol=1e-5, atol=1e-7)
    # the option: train mode updates the statistics
    modes.clear()
    trained = m.run(model, tiny_splits, m.config(epochs=1, batch_size=32, eval_mode=False), UNLIMITED, ctx).model
    key = "blocks.0.2.running_mean"
    assert all(modes) and not torch.equal(trained.state_dict()[key], stats[key])


def test_beta_one_equals_gd_with_the_same_optimizer(tiny_model, tiny_splits, ctx):
    """Without the L2 pull and in train mode (GD's), beta = 1 is GD exactly."""
    shared = dict(lr=0.05, optimizer="sgd", momentum=0.9, weight_decay=1e-3, epochs=2, batch_size=16)
    ngp, gd = METHODS.get("neggrad_plus"), METHODS.get("gd")
    cfg = ngp.config(beta=1.0, forget_batch_size=8, l2_weight=0.0, eval_mode=False, **shared)
    a = ngp.run(tiny_model, tiny_splits, cfg, UNLIMITED, ctx)
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


def test_forget_batches_replay_the_first_pass_within_an_epoch(tiny_model, tiny_splits, ctx):
    """itertools.cycle(forget_loader): the first (shuffled) pass's batches are replayed in the same order until the
    retain pass ends; the next epoch makes a new cycle, so its first pass is shuffled anew."""
    s = tiny_splits
    m = METHODS.get("neggrad_plus")
    res = m.run(_Recorder(tiny_model), s, m.config(epochs=2, batch_size=16, forget_batch_size=8), UNLIMITED, ctx)
    flat = s.x_forget.flatten(1)

    def forget_ids(batch: torch.Tensor) -> list[int] | None:
        hits = (batch.flatten(1)[:, None, :] == flat[None]).all(dim=2)
        return hits.float().argmax(dim=1).tolist() if bool(hits.any(dim=1).all()) else None

    batches = [ids for ids in map(forget_ids, res.model.seen) if ids is not None]
    assert len(batches) == res.info["steps"] == 20  # one forget batch per retain batch, 10 steps per epoch
    first, second = batches[:10], batches[10:]
    for epoch in (first, second):
        first_pass = epoch[:3]  # 24 forget points / 8 = 3 batches per pass
        assert sorted(j for b in first_pass for j in b) == list(range(s.n_forget))
        assert epoch == (first_pass * 4)[:10]  # replayed batch for batch: same points, same order
    assert first[:3] != second[:3]  # a new cycle (a new shuffle) at each epoch


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
    assert v["l2"] > 0  # (l2_weight/2)·|theta - theta0|^2, zero only at the first step
    assert v["loss"] == pytest.approx(0.95 * (v["retain_ce"] + v["l2"]) - 0.05 * v["forget_ce"], rel=1e-5)


@pytest.mark.parametrize(("field", "value"), [("beta", 1.5), ("beta", -0.1), ("forget_batch_size", 0), ("lr", -1.0),
                                              ("l2_weight", -0.1), ("eval_mode", "yes")])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(UsageError, match=field):
        METHODS.get("neggrad_plus").config(**{field: value})


def test_defaults_follow_the_reference_and_search_space_is_valid():
    m = METHODS.get("neggrad_plus")
    cfg = m.config()
    assert (cfg.beta, cfg.lr, cfg.optimizer, cfg.epochs) == (0.95, 0.01, "sgd", 10)
    # plain SGD, the L2 pull (the reference's small-scale weight_decay 0.1) and eval mode, as the SCRUB code
    assert (cfg.momentum, cfg.weight_decay, cfg.l2_weight, cfg.eval_mode) == (0.0, 0.0, 0.1, True)

    class Trial:
        def suggest_float(self, name: str, low: float, high: float, log: bool = False) -> float:
            assert name != "lr" or log
            return (low + high) / 2

        def suggest_categorical(self, name: str, choices: list[str]) -> str:
            return choices[0]

    params = m.search_space(Trial())  # type: ignore[misc]
    assert params["epochs"] == 0 and "beta" in params
    m.config(**params)
