"""l1-sparse: retain fine-tuning plus alpha_e·‖θ‖₁ with alpha_e = alpha·(1 − e/E); alpha = 0 is GD bit for bit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from unlearn_search.errors import UsageError
from unlearn_search.methods import METHODS, Budget
from unlearn_search.methods import l1_sparse as l1_mod

PLENTY = Budget(1.0, retrain_cost=1e9)


def _l1(model: torch.nn.Module) -> float:
    with torch.no_grad():
        return float(sum(p.abs().sum() for p in model.parameters()))


def test_alpha_zero_is_gd_bit_for_bit(tiny_model, tiny_splits, ctx):
    common = dict(lr=0.02, momentum=0.9, weight_decay=5e-4, epochs=2, batch_size=32)
    a = METHODS.get("l1_sparse").run(tiny_model, tiny_splits, METHODS.get("l1_sparse").config(alpha=0.0, **common),
                                     PLENTY, ctx)
    b = METHODS.get("gd").run(tiny_model, tiny_splits, METHODS.get("gd").config(**common), PLENTY, ctx)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.compute_used == b.compute_used == 2 * tiny_splits.n_retain


def test_a_large_alpha_shrinks_the_l1_norm(tiny_model, tiny_splits, ctx):
    m = METHODS.get("l1_sparse")
    cfg = dict(lr=1e-3, epochs=1, weight_decay=0.0)
    sparse = m.run(tiny_model, tiny_splits, m.config(alpha=1.0, **cfg), PLENTY, ctx)
    plain = m.run(tiny_model, tiny_splits, m.config(alpha=0.0, **cfg), PLENTY, ctx)
    assert _l1(sparse.model) < 0.95 * _l1(tiny_model)
    assert _l1(sparse.model) < 0.95 * _l1(plain.model)


def test_one_step_is_ce_plus_alpha_times_the_summed_l1(tiny_model, tiny_splits, ctx):
    """SGD without momentum, one batch of the whole retain set: θ₁ = θ₀ − lr·(∇CE + alpha·sign θ₀)."""
    m = METHODS.get("l1_sparse")
    lr, alpha = 0.05, 0.01
    cfg = m.config(alpha=alpha, lr=lr, momentum=0.0, weight_decay=0.0, epochs=1, batch_size=tiny_splits.n_retain)
    res = m.run(tiny_model, tiny_splits, cfg, PLENTY, ctx)
    params = list(tiny_model.parameters())
    ce = F.cross_entropy(tiny_model.train()(tiny_splits.x_retain), tiny_splits.y_retain)
    grads = torch.autograd.grad(ce, params)
    for p0, g, p1 in zip(params, grads, res.model.parameters(), strict=True):
        assert torch.allclose(p1, p0 - lr * (g + alpha * torch.sign(p0)), atol=1e-6)


def test_alpha_decays_linearly_over_the_epochs(tiny_model, tiny_splits, ctx):
    m = METHODS.get("l1_sparse")
    seen: list[dict[str, float]] = []
    m.run(tiny_model, tiny_splits, m.config(alpha=0.01, epochs=4), PLENTY, ctx,
          on_epoch=lambda e, mod, v: seen.append(v))
    assert [v["alpha"] for v in seen] == pytest.approx([0.01, 0.0075, 0.005, 0.0025])
    assert l1_mod.alpha_at(0.01, 4, 4) == 0.0

    # epochs = 0: the decay spans the epochs the budget affords (2.5 here: 3, the last one partial)
    seen.clear()
    budget = Budget(1.0, retrain_cost=2.5 * tiny_splits.n_retain)
    res = m.run(tiny_model, tiny_splits, m.config(alpha=0.01, epochs=0), budget, ctx,
                on_epoch=lambda e, mod, v: seen.append(v))
    assert res.info["planned_epochs"] == 3 and res.info["epochs"] == 3
    assert [v["alpha"] for v in seen] == pytest.approx([0.01, 0.01 * 2 / 3, 0.01 / 3])
    assert res.compute_used <= budget.limit


def test_bad_values_are_refused():
    with pytest.raises(UsageError, match=r"alpha=-1.0 is out of range; valid: \[0, inf\)"):
        METHODS.get("l1_sparse").config(alpha=-1.0)
