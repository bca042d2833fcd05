"""What EU-k and CF-k share (both freeze all but the last k blocks): frozen BatchNorm statistics stay put, the
returned model is trainable again and the input untouched, and a k beyond the model's depth fails before any work."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unlearn_search.errors import UsageError
from unlearn_search.methods import METHODS, Budget
from unlearn_search.models.small import BlockNet

PLENTY = Budget(1.0, retrain_cost=1e9)
LAST_K = ["eu_k", "cf_k"]


@pytest.mark.parametrize("name", LAST_K)
def test_frozen_batchnorm_statistics_stay_put(name, ctx, tiny_splits):
    torch.manual_seed(0)
    model = BlockNet([nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU()),
                      nn.Linear(16, 4)])
    m = METHODS.get(name)
    res = m.run(model, tiny_splits, m.config(epochs=1), PLENTY, ctx)
    for (key, v0), v1 in zip(model.blocks[0].state_dict().items(), res.model.blocks[0].state_dict().values(),
                             strict=True):
        assert torch.equal(v0, v1), key  # running_mean / running_var / num_batches_tracked included


@pytest.mark.parametrize(("name", "params"), [("eu_k", {"k": 2, "epochs": 1}), ("cf_k", {"epochs": 1})])
def test_returned_model_is_trainable_again_and_input_unchanged(name, params, tiny_model, tiny_splits, ctx):
    before = {n: v.clone() for n, v in tiny_model.state_dict().items()}
    m = METHODS.get(name)
    res = m.run(tiny_model, tiny_splits, m.config(**params), PLENTY, ctx)
    assert all(p.requires_grad for p in res.model.parameters())
    assert not any(mod._forward_pre_hooks for mod in res.model.modules())
    assert all(p.requires_grad for p in tiny_model.parameters())
    for n, v in tiny_model.state_dict().items():
        assert torch.equal(v, before[n])


@pytest.mark.parametrize("name", LAST_K)
@pytest.mark.parametrize("fixture", ["tiny_model", "tiny_cnn"])
def test_k_beyond_the_depth_fails_before_any_work(name, fixture, tiny_splits, ctx, request):
    model = request.getfixturevalue(fixture)
    m = METHODS.get(name)
    calls: list[int] = []
    with pytest.raises(UsageError, match=r"k=4.*1\.\.3"):
        m.run(model, tiny_splits, m.config(k=4), PLENTY, ctx, on_epoch=lambda e, mod, v: calls.append(e))
    assert calls == []
