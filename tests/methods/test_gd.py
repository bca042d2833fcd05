"""GD: plain descent on the retain set, budget respected, input untouched."""

from __future__ import annotations

import torch

from unlearn_search.methods import METHODS, Budget


def test_gd_stops_within_one_batch_of_budget(tiny_model, tiny_splits, ctx):
    m = METHODS.get("gd")
    cfg = m.config(epochs=0, batch_size=16)
    budget = Budget(0.25, retrain_cost=10 * tiny_splits.n_retain)
    res = m.run(tiny_model, tiny_splits, cfg, budget, ctx)
    assert res.compute_used <= budget.limit
    assert res.compute_used > budget.limit - cfg.batch_size


def test_gd_lowers_retain_loss_and_leaves_input_unchanged(tiny_model, tiny_splits, ctx):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    m = METHODS.get("gd")
    res = m.run(tiny_model, tiny_splits, m.config(epochs=3, lr=0.05), Budget(1.0, 1e9), ctx)
    loss = torch.nn.functional.cross_entropy
    with torch.no_grad():
        l0 = loss(tiny_model(tiny_splits.x_retain), tiny_splits.y_retain)
        l1 = loss(res.model(tiny_splits.x_retain), tiny_splits.y_retain)
    assert l1 < l0
    assert res.info["epochs"] == 3
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(v, before[k])
