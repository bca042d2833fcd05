"""``frozen:<model>``: a linear head on a frozen network's features (H1 where the paper tests it, a convex problem).

Pinned: one feature map for every model of a scenario (only heads differ), only the head trains (weight decay and
momentum never move the backbone, nor does any method), BatchNorm statistics never move, EU-k and CF-k do not
apply, H1's parameter distances are over the head alone, and bad names or absent pretrained weights fail in one
line."""

from __future__ import annotations

import pytest
import torch

from unlearn_search.errors import UsageError
from unlearn_search.models import ModelSpec, create_model, max_k
from unlearn_search.training import TrainConfig, train


def _spec(name: str = "frozen:mlp") -> ModelSpec:
    return ModelSpec(name, (1, 8, 8), 4)


def _backbone(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.backbone.state_dict().items()}


def test_every_model_shares_one_feature_map_and_only_the_head_trains() -> None:
    a, b = create_model(_spec(), seed=1), create_model(_spec(), seed=2)
    assert all(torch.equal(v, b.backbone.state_dict()[k]) for k, v in a.backbone.state_dict().items())
    assert not torch.equal(a.head.weight, b.head.weight)  # heads from each model's own seed
    assert [n for n, p in a.named_parameters() if p.requires_grad] == ["head.weight", "head.bias"]
    assert a.head.in_features == 256  # the MLP's last hidden width: its classifier removed


@pytest.mark.parametrize("inner", ["mlp", "cnn", "resnet18_cifar"])
def test_training_with_weight_decay_and_momentum_never_moves_the_backbone(inner: str, ctx) -> None:  # type: ignore[no-untyped-def]
    spec = ModelSpec(f"frozen:{inner}", (3, 8, 8), 4) if inner == "resnet18_cifar" else _spec(f"frozen:{inner}")
    model = create_model(spec, seed=0)
    before, head = _backbone(model), model.head.weight.clone()
    x, y = torch.rand(40, *spec.input_shape), torch.arange(40) % 4
    train(model, x, y, TrainConfig(epochs=2, batch_size=8, optimizer="sgd", lr=0.1, momentum=0.9,
                                   weight_decay=0.1), ctx)
    after = model.backbone.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items()), "the frozen backbone (or its BN stats) moved"
    assert not torch.equal(head, model.head.weight)
    model.train()
    assert model.training and not model.backbone.training  # BatchNorm of the features stays in eval mode


@pytest.mark.parametrize("method", ["gd", "ngd", "ssd", "scrub", "neggrad_plus", "ga"])
def test_no_method_moves_the_backbone(method: str, ctx) -> None:  # type: ignore[no-untyped-def]
    from unlearn_search.methods import METHODS, Budget, Splits

    model = create_model(_spec(), seed=0)
    before = _backbone(model)
    x, y = torch.rand(48, 1, 8, 8), torch.arange(48) % 4
    splits = Splits(x[:8], y[:8], x[8:], y[8:])
    m = METHODS.get(method)
    out = m.run(model, splits, m.config(), Budget(1.0, 4.0 * 40), ctx).model
    assert all(torch.equal(v, out.backbone.state_dict()[k]) for k, v in before.items())


def test_eu_k_and_cf_k_do_not_apply() -> None:
    assert max_k(create_model(_spec(), seed=0)) == 0


def test_h1_distances_are_over_the_head_alone() -> None:
    from unlearn_search import analysis

    a, b = create_model(_spec(), seed=1), create_model(_spec(), seed=2)
    assert len(analysis.param_vector(a)) == 256 * 4 + 4
    d = analysis.param_vector(a) - analysis.param_vector(b)
    with torch.no_grad():
        head = torch.cat([(a.head.weight - b.head.weight).flatten(), a.head.bias - b.head.bias])
    assert float(d.norm()) == pytest.approx(float(head.norm()), rel=1e-6)


@pytest.mark.parametrize("name, message", [
    ("frozen:linear", "'frozen:linear' is not valid: linear has no feature extractor to freeze; valid: frozen:<model>"),
    ("frozen:", "'frozen:' is not valid; valid: frozen:<model> with <model> one of mlp, cnn"),
    ("frozen:frozen:mlp", "'frozen:frozen:mlp' is not valid; valid:"),
    ("frozen:gpt2-tiny", "gpt2-tiny has no feature extractor to freeze"),
    ("frozen:nope", "unknown model 'nope'; valid: cnn, linear, mlp"),
])
def test_bad_names_fail_in_one_line(name: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        create_model(_spec(name), seed=0)
    assert "\n" not in str(e.value)


def test_pretrained_weights_that_cannot_be_loaded_fail_in_one_line(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no hub here: the cache is empty, so loading fails at once
    with pytest.raises(UsageError, match=r"model frozen:timm:resnet18: timm's pretrained weights could not be "
                                         r"loaded \(.*\); they come from the Hugging Face hub") as e:
        create_model(ModelSpec("frozen:timm:resnet18", (3, 32, 32), 10), seed=0)
    assert "\n" not in str(e.value)
