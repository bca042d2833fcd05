"""What EU-k and CF-k share (both freeze all but the last k units): frozen BatchNorm statistics stay put, the
returned model is trainable again and the input untouched, k is a unit of `model_units` (k = 1: the last feature
stage with the classifier head), and a k that leaves nothing frozen, or lies beyond the model, fails before any
work with a one-line error naming the valid range."""

from __future__ import annotations

import optuna
import pytest
import torch
from torch import nn

from unlearn_search.errors import UsageError
from unlearn_search.methods import METHODS, Budget, Splits
from unlearn_search.models import ModelSpec, create_model, max_k, model_units
from unlearn_search.models.small import BlockNet

PLENTY = Budget(1.0, retrain_cost=1e9)
LAST_K = ["eu_k", "cf_k"]
#: What each method's error points at when k would cover the whole network.
INSTEAD = {"eu_k": "'retrain'", "cf_k": "'gd'"}


@pytest.mark.parametrize("name", LAST_K)
def test_frozen_batchnorm_statistics_stay_put(name, ctx, tiny_splits):
    torch.manual_seed(0)
    model = BlockNet([nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU()),
                      nn.Sequential(nn.Linear(16, 16), nn.ReLU()), nn.Linear(16, 4)])
    m = METHODS.get(name)
    res = m.run(model, tiny_splits, m.config(epochs=1), PLENTY, ctx)
    for (key, v0), v1 in zip(model.blocks[0].state_dict().items(), res.model.blocks[0].state_dict().values(),
                             strict=True):
        assert torch.equal(v0, v1), key  # running_mean / running_var / num_batches_tracked included


@pytest.mark.parametrize(("name", "params"), [("eu_k", {"k": 1, "epochs": 1}), ("cf_k", {"epochs": 1})])
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
def test_k_beyond_the_model_fails_before_any_work(name, fixture, tiny_splits, ctx, request):
    model = request.getfixturevalue(fixture)
    m = METHODS.get(name)
    calls: list[int] = []
    with pytest.raises(UsageError, match=r"k=4.*valid: 1\.\.1$"):
        m.run(model, tiny_splits, m.config(k=4), PLENTY, ctx, on_epoch=lambda e, mod, v: calls.append(e))
    assert calls == []


@pytest.mark.parametrize("name", LAST_K)
@pytest.mark.parametrize(("model_name", "shape", "k_all"), [("mlp", (1, 8, 8), 2), ("cnn", (1, 8, 8), 2),
                                                            ("resnet18_cifar", (3, 8, 8), 4)])
def test_k_covering_every_unit_is_refused_naming_the_range_and_the_method_to_use(name, model_name, shape, k_all,
                                                                                  ctx):
    """k = every unit would re-initialise (EU-k: retraining) or unfreeze (CF-k: GD) the whole network."""
    model = create_model(ModelSpec(model_name, shape, 4), seed=0)
    assert len(model_units(model)) == k_all
    m = METHODS.get(name)
    cfg = m.config(k=k_all)
    valid = f"valid: 1..{k_all - 1}"
    with pytest.raises(UsageError) as check_error:
        m.check(cfg, model)  # what the entry points call before any work
    message = str(check_error.value)
    assert "\n" not in message
    assert message.startswith(f"k={k_all} ") and model_name in message and INSTEAD[name] in message
    assert message.endswith(valid)
    assert "'retrain'" in message  # both point at retraining from scratch
    splits = Splits(x_forget=torch.rand(2, *shape), y_forget=torch.tensor([0, 1]),
                    x_retain=torch.rand(4, *shape), y_retain=torch.tensor([0, 1, 2, 3]))
    with pytest.raises(UsageError, match=valid):
        m.run(model, splits, cfg, PLENTY, ctx)
    m.check(m.config(k=k_all - 1), model)  # the largest valid k passes


@pytest.mark.parametrize("name", LAST_K)
def test_linear_model_has_no_valid_k(name, ctx):
    model = create_model(ModelSpec("linear", (1, 8, 8), 4), seed=0)
    assert max_k(model) == 0
    m = METHODS.get(name)
    with pytest.raises(UsageError, match=rf"^{name} does not apply to linear: .*'retrain'") as e:
        m.check(m.config(k=1), model)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", LAST_K)
@pytest.mark.parametrize(("model_name", "shape"), [("mlp", (1, 8, 8)), ("cnn", (1, 8, 8)),
                                                   ("resnet18_cifar", (3, 8, 8)), ("timm:resnet18", (3, 32, 32))])
def test_search_space_never_proposes_every_unit(name, model_name, shape):
    """The tuner records max_k (units - 1) on the trial; k is drawn from 1..max_k, each draw valid for the model."""
    model = create_model(ModelSpec(model_name, shape, 4), seed=0)
    n_units = len(model_units(model))
    m = METHODS.get(name)
    assert m.search_space is not None
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = set()
    for _ in range(30):
        trial = study.ask()
        trial.set_user_attr("max_k", max_k(model))
        cfg = m.config(**m.search_space(trial))
        m.check(cfg, model)
        drawn.add(cfg.k)
        assert study.trials[-1].distributions["k"].high == n_units - 1
    assert drawn == set(range(1, n_units))


@pytest.mark.parametrize("name", LAST_K)
def test_search_space_refuses_a_model_without_a_valid_k(name):
    trial = optuna.create_study().ask()
    trial.set_user_attr("max_k", 0)
    with pytest.raises(UsageError, match="do not apply"):
        METHODS.get(name).search_space(trial)  # type: ignore[misc]


@pytest.mark.parametrize("name", LAST_K)
def test_k1_on_resnet18_cifar_trains_exactly_layer4_and_the_head(name, ctx):
    """The reference's last block (layer4) with the classifier head: every other parameter and buffer bit-identical."""
    spec = ModelSpec("resnet18_cifar", (3, 8, 8), 4)
    model = create_model(spec, seed=0)
    g = torch.Generator().manual_seed(0)
    splits = Splits(x_forget=torch.rand(2, 3, 8, 8, generator=g), y_forget=torch.tensor([0, 1]),
                    x_retain=torch.rand(8, 3, 8, 8, generator=g), y_retain=torch.arange(8) % 4)
    m = METHODS.get(name)
    res = m.run(model, splits, m.config(k=1, epochs=1, batch_size=4), PLENTY, ctx)
    assert res.info["epochs"] == 1
    before, after = model.state_dict(), res.model.state_dict()
    params = {n for n, _ in model.named_parameters()}
    changed = {n for n in params if not torch.equal(before[n], after[n])}
    trained = {n for n in params if n.startswith(("blocks.4.", "blocks.5."))}  # layer4, head (pool, linear)
    assert changed == trained
    assert "blocks.5.1.weight" in trained and any(n.startswith("blocks.4.1.conv2") for n in trained)
    for n, v in before.items():  # buffers too: the frozen part's BatchNorm statistics stay put
        if not n.startswith(("blocks.4.", "blocks.5.")):
            assert torch.equal(v, after[n]), n
