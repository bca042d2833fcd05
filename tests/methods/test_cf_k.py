"""CF-k: only the last k units are fine-tuned, from the poisoned weights; everything else stays bit-identical."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unlearn_search.context import RunContext
from unlearn_search.errors import UsageError
from unlearn_search.methods import METHODS, Budget, cf_k  # noqa: F401  (importing cf_k registers it)
from unlearn_search.models import last_k_units, model_units

PLENTY = Budget(1.0, retrain_cost=1e9)


def _retain_loss(model: nn.Module, splits) -> float:  # type: ignore[no-untyped-def]
    with torch.no_grad():
        return float(nn.functional.cross_entropy(model.eval()(splits.x_retain), splits.y_retain))


@pytest.mark.parametrize(("fixture", "k"), [("tiny_model", 1), ("tiny_cnn", 1)])
def test_only_last_k_units_change_and_the_rest_is_bit_identical(fixture, k, tiny_splits, ctx, request):
    model = request.getfixturevalue(fixture)
    m = METHODS.get("cf_k")
    cfg = m.config(k=k, epochs=2)
    assert cfg.weight_decay > 0 and cfg.momentum > 0  # both would move frozen weights if they reached them
    res = m.run(model, tiny_splits, cfg, PLENTY, ctx)
    units0, units1 = model_units(model), model_units(res.model)
    assert res.info["epochs"] == 2 and res.info["k"] == k
    assert len(units0[-1]) == 2  # k = 1: the second block with the head
    frozen0, frozen1 = [b for u in units0[:-k] for b in u], [b for u in units1[:-k] for b in u]
    for b0, b1 in zip(frozen0, frozen1, strict=True):
        for (name, v0), v1 in zip(b0.state_dict().items(), b1.state_dict().values(), strict=True):
            assert torch.equal(v0, v1), name
    for b0, b1 in zip(last_k_units(model, k), last_k_units(res.model, k), strict=True):
        for (name, p0), p1 in zip(b0.named_parameters(), b1.parameters(), strict=True):
            assert not torch.equal(p0, p1), name


@pytest.mark.parametrize("fixture", ["tiny_model", "tiny_cnn"])
def test_fine_tunes_from_the_poisoned_weights_without_reinitialising(fixture, tiny_splits, ctx, request):
    """With a vanishing lr the last unit stays at the input's weights (EU-k would have replaced them)."""
    model = request.getfixturevalue(fixture)
    m = METHODS.get("cf_k")
    res = m.run(model, tiny_splits, m.config(lr=1e-9, epochs=1), PLENTY, ctx)
    assert res.info["epochs"] == 1 and res.compute_used == tiny_splits.n_retain
    old, new = nn.ModuleList(last_k_units(model, 1)), nn.ModuleList(last_k_units(res.model, 1))
    for p_old, p_new in zip(old.parameters(), new.parameters(), strict=True):
        assert torch.allclose(p_new, p_old, atol=1e-6)


def test_fine_tuning_lowers_the_retain_loss(tiny_model, tiny_splits, ctx):
    m = METHODS.get("cf_k")
    res = m.run(tiny_model, tiny_splits, m.config(epochs=5, lr=0.05), PLENTY, ctx)
    assert _retain_loss(res.model, tiny_splits) < 0.9 * _retain_loss(tiny_model, tiny_splits)


def test_deterministic(tiny_model, tiny_splits, ctx):
    m = METHODS.get("cf_k")
    a = m.run(tiny_model, tiny_splits, m.config(epochs=1), PLENTY, ctx).model.state_dict()
    b = m.run(tiny_model, tiny_splits, m.config(epochs=1), PLENTY, RunContext(seed=0)).model.state_dict()
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_config_defaults_and_validation_names_the_field():
    m = METHODS.get("cf_k")
    cfg = m.config()
    assert (cfg.k, cfg.lr, cfg.optimizer, cfg.momentum, cfg.weight_decay, cfg.epochs, cfg.batch_size) == (
        1, 0.01, "sgd", 0.9, 5e-4, 10, 64)
    assert type(cfg) is not type(METHODS.get("eu_k").config())  # one typed config per method
    for bad, field in [({"k": 0}, "k"), ({"lr": -1.0}, "lr"), ({"momentum": 1.0}, "momentum"),
                       ({"epochs": -1}, "epochs")]:
        with pytest.raises(UsageError, match=field):
            m.config(**bad)
    with pytest.raises(UsageError, match="alpha"):
        m.config(alpha=0.5)


def test_stops_within_one_batch_of_budget(tiny_cnn, tiny_splits, ctx):
    m = METHODS.get("cf_k")
    cfg = m.config(epochs=0, batch_size=16)
    budget = Budget(0.25, retrain_cost=10 * tiny_splits.n_retain)
    seen: list[int] = []
    res = m.run(tiny_cnn, tiny_splits, cfg, budget, ctx, on_epoch=lambda e, mod, v: seen.append(e))
    assert budget.limit - cfg.batch_size < res.compute_used <= budget.limit
    assert seen == list(range(int(res.info["epochs"])))
