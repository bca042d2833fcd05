"""SCRUB: frozen teacher, KL-only max pass in the first msteps epochs, γ·CE + α·KL min pass, KL at T."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from unlearn_search.compute import FORWARD_ONLY_COST
from unlearn_search.context import RunContext
from unlearn_search.errors import UsageError
from unlearn_search.methods import METHODS, Budget, Splits
from unlearn_search.methods import scrub as scrub_mod

STEP = 1.0 + FORWARD_ONLY_COST
UNLIMITED = Budget(1.0, 1e12)


def _hand_kl(s: torch.Tensor, t: torch.Tensor, temp: float) -> torch.Tensor:
    """KL(teacher || student) as the reference has it: softmax at T, summed, times T² / batch size."""
    ps = torch.exp(s / temp) / torch.exp(s / temp).sum(1, keepdim=True)
    pt = torch.exp(t / temp) / torch.exp(t / temp).sum(1, keepdim=True)
    return (pt * (pt.log() - ps.log())).sum() * temp**2 / len(s)


def _perturb(model: torch.nn.Module, seed: int = 5, scale: float = 0.05) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def _state(model, ctx, **kw):
    return scrub_mod.ScrubState(model, METHODS.get("scrub").config(**kw), ctx)


def _equal_params(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_distill_kl_matches_reference_formula_with_temperature():
    g = torch.Generator().manual_seed(0)
    s, t = 3 * torch.randn(6, 5, generator=g), 3 * torch.randn(6, 5, generator=g)
    for temp in (1.0, 4.0):
        assert torch.allclose(scrub_mod.distill_kl(s, t, temp), _hand_kl(s, t, temp), rtol=1e-5, atol=1e-6)
    # T matters (not fixed at 1); the T² / batch scaling is the reference's (not a mean over classes)
    assert not torch.allclose(scrub_mod.distill_kl(s, t, 4.0), scrub_mod.distill_kl(s, t, 1.0))
    assert float(scrub_mod.distill_kl(t, t, 4.0)) == pytest.approx(0.0, abs=1e-6)


def test_teacher_is_frozen_and_only_student_is_optimised(tiny_model, tiny_splits, ctx):
    st = _state(tiny_model, ctx, temperature=4.0)
    teacher_ids = {id(p) for p in st.teacher.parameters()}
    opt_ids = {id(p) for g in st.opt.param_groups for p in g["params"]}
    assert opt_ids == {id(p) for p in st.student.parameters()}
    assert not opt_ids & teacher_ids
    assert not any(p.requires_grad for p in st.teacher.parameters())
    assert not st.teacher.training
    _perturb(st.student)
    st.max_step(tiny_splits.x_forget[:8])
    st.min_step(tiny_splits.x_retain[:16], tiny_splits.y_retain[:16])
    assert _equal_params(st.teacher, tiny_model)  # teacher never moved
    assert not _equal_params(st.student, tiny_model)


def test_method_changes_the_student(tiny_model, tiny_splits, ctx):
    m = METHODS.get("scrub")
    res = m.run(tiny_model, tiny_splits, m.config(epochs=1, msteps=1), UNLIMITED, ctx)
    assert not _equal_params(res.model, tiny_model)


def test_max_step_ascends_kl_alone_at_temperature(tiny_model, tiny_splits, ctx):
    x = tiny_splits.x_forget[:8]
    cfg = dict(optimizer="sgd", lr=0.05, momentum=0.0, weight_decay=0.0, temperature=4.0)
    a = _state(tiny_model, ctx, gamma=1.0, alpha=0.5, **cfg)
    b = _state(tiny_model, ctx, gamma=0.2, alpha=3.0, **cfg)
    _perturb(a.student)
    _perturb(b.student)
    with torch.no_grad():
        t = tiny_model(x)
        kl0 = _hand_kl(a.student(x), t, 4.0)
    loss = a.max_step(x)
    b.max_step(x)
    assert float(loss) == pytest.approx(-float(kl0), rel=1e-5)  # the loss is -KL at T=4, nothing else
    with torch.no_grad():
        kl1 = _hand_kl(a.student(x), t, 4.0)
    assert kl1 > kl0  # ascent, not descent
    assert _equal_params(a.student, b.student)  # γ and α play no part in the max pass


def test_min_step_is_gamma_ce_plus_alpha_kl(tiny_model, tiny_splits, ctx):
    x, y = tiny_splits.x_retain[:16], tiny_splits.y_retain[:16]
    st = _state(tiny_model, ctx, gamma=0.7, alpha=0.3, temperature=4.0, optimizer="sgd", lr=0.05,
                weight_decay=0.0)
    _perturb(st.student)
    with torch.no_grad():
        s, t = st.student(x), tiny_model(x)
        want = 0.7 * torch.nn.functional.cross_entropy(s, y) + 0.3 * _hand_kl(s, t, 4.0)
    assert float(st.min_step(x, y)) == pytest.approx(float(want), rel=1e-5)
    with torch.no_grad():
        s2 = st.student(x)
        after = 0.7 * torch.nn.functional.cross_entropy(s2, y) + 0.3 * _hand_kl(s2, t, 4.0)
    assert after < want


@pytest.mark.parametrize("msteps", [0, 2])
def test_max_passes_only_in_first_msteps_epochs(tiny_model, tiny_splits, ctx, msteps):
    m = METHODS.get("scrub")
    seen: list[dict[str, float]] = []
    cfg = m.config(epochs=5, msteps=msteps, forget_batch_size=8, retain_batch_size=64)
    res = m.run(tiny_model, tiny_splits, cfg, UNLIMITED, ctx, on_epoch=lambda e, mod, v: seen.append(v))
    assert [("forget_kl" in v) for v in seen] == [e < msteps for e in range(5)]
    assert res.info["max_epochs"] == msteps
    assert res.info["max_steps"] == msteps * math.ceil(tiny_splits.n_forget / 8)
    assert res.info["min_steps"] == 5 * math.ceil(tiny_splits.n_retain / 64)
    want = (msteps * tiny_splits.n_forget + 5 * tiny_splits.n_retain) * STEP  # teacher forwards charged too
    assert res.compute_used == pytest.approx(want)


def test_forget_set_matters_only_through_the_max_pass(tiny_model, tiny_splits, ctx):
    m = METHODS.get("scrub")
    g = torch.Generator().manual_seed(9)
    other = Splits(torch.rand(tiny_splits.x_forget.shape, generator=g), tiny_splits.y_forget,
                   tiny_splits.x_retain, tiny_splits.y_retain)
    for msteps, same in ((0, True), (1, False)):
        cfg = m.config(epochs=2, msteps=msteps, forget_batch_size=8)
        a = m.run(tiny_model, tiny_splits, cfg, UNLIMITED, ctx).model
        b = m.run(tiny_model, other, cfg, UNLIMITED, ctx).model
        assert _equal_params(a, b) is same


def test_budget_driven_run_keeps_msteps_rule(tiny_model, tiny_splits, ctx):
    m = METHODS.get("scrub")
    seen: list[dict[str, float]] = []
    cfg = m.config(epochs=0, msteps=2)
    budget = Budget(1.0, retrain_cost=6 * tiny_splits.n_retain)
    res = m.run(tiny_model, tiny_splits, cfg, budget, ctx, on_epoch=lambda e, mod, v: seen.append(v))
    assert len(seen) >= 3
    assert [("forget_kl" in v) for v in seen] == [e < 2 for e in range(len(seen))]
    assert res.compute_used <= budget.limit
    assert res.compute_used > budget.limit - cfg.retain_batch_size * STEP


def test_lr_schedule_follows_reference(tiny_model, tiny_splits, ctx):
    m = METHODS.get("scrub")
    cfg = m.config(epochs=10, lr=1e-3, msteps=0)
    want = [1e-3] * 5 + [1e-4] * 3 + [1e-5, 1e-6]
    assert [scrub_mod.lr_at(cfg, e) for e in range(1, 11)] == pytest.approx(want)
    seen: list[float] = []
    m.run(tiny_model, tiny_splits, cfg, UNLIMITED, ctx, on_epoch=lambda e, mod, v: seen.append(v["lr"]))
    assert seen == pytest.approx(want)


def test_stops_within_one_batch_of_budget(tiny_model, tiny_splits, ctx):
    m = METHODS.get("scrub")
    cfg = m.config(epochs=0, forget_batch_size=8, retain_batch_size=16)
    budget = Budget(0.25, retrain_cost=10 * tiny_splits.n_retain)
    res = m.run(tiny_model, tiny_splits, cfg, budget, ctx)
    assert budget.limit - 16 * STEP < res.compute_used <= budget.limit
    # a budget that ends inside the first max pass
    small = Budget(1.0, retrain_cost=20.0)
    res = m.run(tiny_model, tiny_splits, cfg, small, ctx)
    assert small.limit - 8 * STEP < res.compute_used <= small.limit
    assert res.info["max_steps"] == 1 and res.info["min_steps"] == 0


def test_input_unchanged_frozen_params_untouched_and_seeded(tiny_model, tiny_splits, ctx):
    model = copy.deepcopy(tiny_model)
    model.blocks[0].requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    m = METHODS.get("scrub")
    cfg = m.config(epochs=3)  # Adam with weight decay 0.1 must not reach frozen parameters
    a = m.run(model, tiny_splits, cfg, UNLIMITED, ctx).model
    b = m.run(model, tiny_splits, cfg, UNLIMITED, ctx).model
    c = m.run(model, tiny_splits, cfg, UNLIMITED, RunContext(seed=1, device=ctx.device)).model
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    for p, q in zip(a.blocks[0].parameters(), model.blocks[0].parameters(), strict=True):
        assert torch.equal(p, q)
    assert _equal_params(a, b)
    assert not _equal_params(a, c)
    assert not a.training


@pytest.mark.parametrize(
    ("field", "value"),
    [("temperature", 0.0), ("msteps", -1), ("alpha", -0.1), ("gamma", -1.0), ("forget_batch_size", 0),
     ("retain_batch_size", 0), ("optimizer", "rmsprop"), ("lr", 0.0), ("lr_decay_epochs", (0,)),
     ("lr_decay_epochs", ("x",)), ("lr_decay_rate", 0.0), ("epochs", -1)],
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(UsageError, match=field):
        METHODS.get("scrub").config(**{field: value})


def test_config_defaults_and_search_space():
    m = METHODS.get("scrub")
    cfg = m.config()
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.gamma, cfg.alpha, cfg.msteps, cfg.temperature,
            cfg.epochs, cfg.lr_decay_epochs, cfg.lr_decay_rate) == ("adam", 5e-4, 0.1, 1.0, 0.5, 3, 2.0, 10,
                                                                     (5, 8, 9), 0.1)
    assert m.config(lr_decay_epochs=[3, 4]).lr_decay_epochs == (3, 4)
    with pytest.raises(UsageError, match="T"):
        m.config(T=2)

    class Trial:
        def suggest_float(self, name, low, high, log=False):
            return low

        def suggest_int(self, name, low, high):
            return high

        def suggest_categorical(self, name, choices):
            return choices[-1]

    params = m.search_space(Trial())
    assert params["epochs"] == 0
    assert m.config(**params).msteps >= 1
