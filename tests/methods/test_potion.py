"""Potion: label-free importance by hand, the retain set as reference, α as the percentile of the finite ratios,
the PTN search's schedule and stopping rule, the last try kept when the search runs out, budget, validation."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from unlearn_search.compute import FORWARD_ONLY_COST
from unlearn_search.errors import UsageError
from unlearn_search.methods import METHODS, Budget, Splits
from unlearn_search.methods import potion as potion_mod
from unlearn_search.methods import ssd as ssd_mod

M = METHODS.get("potion")


def _cost(splits: Splits, tries: int) -> float:
    """Importances (forward+backward over retain and forget), the poisoned model's forget accuracy and ``tries``
    accuracy checks (forward-only over forget)."""
    return splits.n_retain + splits.n_forget + (1 + tries) * FORWARD_ONLY_COST * splits.n_forget


def _spy(monkeypatch) -> list[tuple[list[torch.Tensor], list[torch.Tensor], float]]:  # type: ignore[no-untyped-def]
    """Record (reference importance, forget importance, alpha) of every dampening the method does."""
    seen: list[tuple[list[torch.Tensor], list[torch.Tensor], float]] = []
    real = potion_mod.dampen

    def spy(params, ref, forget, alpha, dampening):  # type: ignore[no-untyped-def]
        assert dampening == 1.0  # λ is fixed in the adaptive methods
        seen.append(([t.clone() for t in ref], [t.clone() for t in forget], alpha))
        return real(params, ref, forget, alpha, dampening)

    monkeypatch.setattr(potion_mod, "dampen", spy)
    return seen


def test_label_free_importance_by_hand() -> None:
    """Linear model f = Wx + b: d‖f‖₂/dW = (f/‖f‖) xᵀ, d‖f‖₂²/dW = 2 f xᵀ; per batch the mean over its
    examples, then |.|, then the mean over batches; eval mode (dropout off), mode restored, .grad untouched."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 3, generator=g)
    model = nn.Sequential(nn.Dropout(0.5), nn.Linear(3, 2))
    model.train()
    lin = model[1]
    assert isinstance(lin, nn.Linear)
    w, b = lin.weight.detach(), lin.bias.detach()
    batches = torch.randperm(5, generator=torch.Generator().manual_seed(7)).split(2)
    assert len(batches) == 3
    for squared in (False, True):
        imps, _ = potion_mod.label_free_importance(model, x, 2, torch.Generator().manual_seed(7), squared)
        assert model.training and all(p.grad is None for p in model.parameters())
        exp_w, exp_b = torch.zeros_like(w), torch.zeros_like(b)
        for idx in batches:
            f = x[idx] @ w.T + b
            d = 2 * f if squared else f / f.norm(dim=1, keepdim=True)  # d loss_i / d f_i
            exp_w += (d.T @ x[idx] / len(idx)).abs()
            exp_b += (d.sum(0) / len(idx)).abs()
        torch.testing.assert_close(imps[0], exp_w / 3, rtol=1e-5, atol=1e-8)
        torch.testing.assert_close(imps[1], exp_b / 3, rtol=1e-5, atol=1e-8)


def test_ratios_drop_nan_and_inf_and_alpha_is_numpys_percentile() -> None:
    ref = [torch.tensor([[0.0, 1.0], [2.0, 0.0]]), torch.tensor([4.0, 1.0])]
    forget = [torch.tensor([[0.0, 3.0], [1.0, 5.0]]), torch.tensor([0.0, 2.0])]
    ratios = potion_mod.finite_ratios(ref, forget)  # 0/0 and 5/0 dropped
    assert sorted(ratios.tolist()) == [0.0, 0.5, 2.0, 3.0]
    assert potion_mod.select_alpha(ratios, 50.0) == pytest.approx(1.25)  # linear interpolation
    assert potion_mod.select_alpha(ratios, 90.0) == pytest.approx(float(np.percentile([0, 0.5, 2, 3], 90)))
    assert potion_mod.select_alpha(np.zeros(0, dtype=np.float32), 50.0) == math.inf  # nothing to select
    # percentile of the search value s: 100 − ln(1 + 100 s)
    assert potion_mod.percentile_of(0.0) == 100.0
    assert potion_mod.percentile_of(0.01) == pytest.approx(100 - math.log(2))
    # x/0 elements are selected at any α and zeroed (factor λ·0/forget), 0/0 never
    p = [nn.Parameter(torch.ones(2, 2)), nn.Parameter(torch.ones(2))]
    selected = ssd_mod.dampen(p, ref, forget, 1.25, 1.0)
    assert selected == 3  # 3 > 1.25, 5/0, 2 > 1.25 (bias)
    torch.testing.assert_close(p[0].detach(), torch.tensor([[1.0, 1 / 3], [1.0, 0.0]]))
    torch.testing.assert_close(p[1].detach(), torch.tensor([1.0, 0.5]))


def test_importances_are_label_free_on_retain_and_forget(tiny_model, tiny_splits, ctx, monkeypatch) -> None:
    """The reference importance is the retain set's (where undiscovered poisons sit), not retain ∪ forget's as
    in SSD; the forget importance is the forget set's; labels play no part; batch 512 from the run's generators."""
    seen = _spy(monkeypatch)
    cfg = M.config(max_tries=1)
    assert cfg.batch_size == 512 and cfg.statistic == "l2"
    M.run(tiny_model, tiny_splits, cfg, Budget(1.0, 1e6), ctx)
    ref = copy.deepcopy(tiny_model)
    exp_r, _ = potion_mod.label_free_importance(ref, tiny_splits.x_retain, 512,
                                                ctx.generator(offset=potion_mod.RETAIN_OFFSET))
    exp_f, _ = potion_mod.label_free_importance(ref, tiny_splits.x_forget, 512,
                                                ctx.generator(offset=potion_mod.FORGET_OFFSET))
    x_full, _ = tiny_splits.full()
    full, _ = potion_mod.label_free_importance(ref, x_full, 512, ctx.generator(offset=potion_mod.RETAIN_OFFSET))
    ((r, f, _),) = seen
    for got, want in zip(r + f, exp_r + exp_f, strict=True):
        assert torch.equal(got, want)
    assert not torch.allclose(r[0], full[0])  # not SSD's retain ∪ forget

    relabelled = Splits(tiny_splits.x_forget, (tiny_splits.y_forget + 1) % 4, tiny_splits.x_retain,
                        (tiny_splits.y_retain + 1) % 4)
    M.run(tiny_model, relabelled, cfg, Budget(1.0, 1e6), ctx)
    for got, want in zip(seen[1][0] + seen[1][1], r + f, strict=True):
        assert torch.equal(got, want)


def test_ce_statistic_is_adaptive_ssds(tiny_model, tiny_splits, ctx, monkeypatch) -> None:
    seen = _spy(monkeypatch)
    M.run(tiny_model, tiny_splits, M.config(statistic="ce", max_tries=1), Budget(1.0, 1e6), ctx)
    ref = copy.deepcopy(tiny_model)
    exp_r, _ = ssd_mod.importance(ref, tiny_splits.x_retain, tiny_splits.y_retain, 512,
                                  ctx.generator(offset=potion_mod.RETAIN_OFFSET))
    ((r, _, _),) = seen
    for got, want in zip(r, exp_r, strict=True):
        assert torch.equal(got, want)


def _dampened_copy(model: nn.Module, ref, forget, alpha: float) -> nn.Module:  # type: ignore[no-untyped-def]
    m = copy.deepcopy(model).eval()
    ssd_mod.dampen([p for p in m.parameters() if p.requires_grad], ref, forget, alpha, 1.0)
    return m


@pytest.mark.parametrize(("fixture", "rho", "step"), [("tiny_model", 0.5, 1.5), ("tiny_model", 0.9, 1.1),
                                                      ("tiny_cnn", 0.9, 2.0)])
def test_ptn_search_schedule_and_stop(fixture, rho, step, tiny_splits, ctx, monkeypatch, request) -> None:
    """Try k takes α at the percentile 100 − ln(1 + 100·s₀·stepᵏ), s₀ = forget share / 25, dampens the
    *poisoned* weights afresh (no compounding), and the search stops at the first try whose forget accuracy is
    <= ρ × the poisoned model's; that try's model is the result: selected elements × min(retain/forget, 1), others
    bit-identical."""
    model = request.getfixturevalue(fixture)
    seen = _spy(monkeypatch)
    res = M.run(model, tiny_splits, M.config(rho=rho, step=step), Budget(1.0, 1e6), ctx)
    n_f, n_r = tiny_splits.n_forget, tiny_splits.n_retain
    x_f, y_f = tiny_splits.x_forget, tiny_splits.y_forget
    acc0 = potion_mod.accuracy(copy.deepcopy(model), x_f, y_f, 512)
    assert res.info["reached"] == 1.0 and res.info["tries"] == len(seen) >= 2
    assert res.info["forget_acc_before"] == acc0
    ratios = potion_mod.finite_ratios(seen[0][0], seen[0][1])
    s0 = n_f / (n_f + n_r) / 25
    for k, (ref, forget, alpha) in enumerate(seen):
        pct = 100 - math.log(1 + 100 * s0 * step**k)
        assert alpha == pytest.approx(float(np.percentile(ratios, pct)), rel=1e-6)
        acc = potion_mod.accuracy(_dampened_copy(model, ref, forget, alpha), x_f, y_f, 512)
        assert (acc <= rho * acc0) == (k == len(seen) - 1), (k, acc, acc0)
    assert res.info["alpha"] == seen[-1][2]

    ref, forget, alpha = seen[-1]
    expected = _dampened_copy(model, ref, forget, alpha)
    n_kept = 0
    for p_out, p_exp, p_in, fr, ff in zip(res.model.parameters(), expected.parameters(), model.parameters(), ref,
                                          forget, strict=True):
        assert torch.equal(p_out, p_exp)
        kept = ~(ff > alpha * fr)
        assert torch.equal(p_out[kept], p_in[kept])  # not selected: bit-identical to the poisoned model
        n_kept += int(kept.sum())
    assert 0 < res.info["selected"] == sum(p.numel() for p in model.parameters()) - n_kept
    assert res.compute_used == pytest.approx(_cost(tiny_splits, len(seen)))


def test_search_that_runs_out_keeps_the_last_try(tiny_model, tiny_splits, ctx, monkeypatch) -> None:
    """ρ = 0 (every discovered poison misclassified) is out of reach in 3 tries: the result is the third try's
    model, as the authors' ``best_model`` is, not the poisoned one; a budget cut ends the search the same way."""
    seen = _spy(monkeypatch)
    res = M.run(tiny_model, tiny_splits, M.config(max_tries=3), Budget(1.0, 1e6), ctx)
    assert (res.info["tries"], res.info["reached"], len(seen)) == (3.0, 0.0, 3)
    assert res.info["forget_acc"] > 0
    expected = _dampened_copy(tiny_model, *seen[-1])
    assert all(torch.equal(a, b) for a, b in zip(res.model.parameters(), expected.parameters(), strict=True))
    assert res.info["percentile"] == pytest.approx(potion_mod.percentile_of(
        tiny_splits.n_forget / (tiny_splits.n_forget + tiny_splits.n_retain) / 25 * 1.1**2))

    seen.clear()
    cut = M.run(tiny_model, tiny_splits, M.config(), Budget(1.0, _cost(tiny_splits, 4) + 1), ctx)
    assert (cut.info["tries"], cut.info["reached"]) == (4.0, 0.0)
    assert cut.compute_used == pytest.approx(_cost(tiny_splits, 4))
    expected = _dampened_copy(tiny_model, *seen[-1])
    assert all(torch.equal(a, b) for a, b in zip(cut.model.parameters(), expected.parameters(), strict=True))


def test_skips_when_one_try_is_unaffordable(tiny_model, tiny_splits, ctx) -> None:
    calls: list[int] = []
    one = M.run(tiny_model, tiny_splits, M.config(), Budget(1.0, _cost(tiny_splits, 1)), ctx,
                on_epoch=lambda e, _m, v: calls.append(e))
    assert one.info["tries"] == 1.0 and one.info["skipped"] == 0.0 and calls == [0]
    assert one.compute_used == pytest.approx(_cost(tiny_splits, 1))

    calls.clear()
    short = M.run(tiny_model, tiny_splits, M.config(), Budget(1.0, _cost(tiny_splits, 1) - 0.5), ctx,
                  on_epoch=lambda e, _m, v: calls.append(e))
    assert (short.compute_used, short.info["skipped"], calls) == (0.0, 1.0, [])
    assert short.model is not tiny_model
    assert all(torch.equal(short.model.state_dict()[k], v) for k, v in tiny_model.state_dict().items())


@pytest.mark.parametrize(("field", "value"), [("rho", -0.1), ("rho", 1.5), ("step", 1.0), ("start_divisor", 0.0),
                                              ("max_tries", 0), ("max_tries", 2.5), ("batch_size", 0),
                                              ("statistic", "fisher")])
def test_config_validation_names_field(field: str, value: object) -> None:
    with pytest.raises(UsageError, match=field):
        M.config(**{field: value})


def test_defaults_and_search_space() -> None:
    cfg = M.config()
    assert (cfg.rho, cfg.step, cfg.start_divisor, cfg.max_tries, cfg.statistic, cfg.batch_size) == \
        (0.0, 1.1, 25.0, 500, "l2", 512)

    class Trial:
        def __init__(self) -> None:
            self.calls: dict[str, tuple[float, float]] = {}

        def suggest_float(self, name: str, low: float, high: float, log: bool = False) -> float:
            self.calls[name] = (low, high)
            return high

    trial = Trial()
    params = potion_mod.search_space(trial)
    assert trial.calls == {"rho": (0.0, 0.75)}  # the authors' sweep of ρ (CIFAR_ptn_runs.sh)
    M.config(**params)
