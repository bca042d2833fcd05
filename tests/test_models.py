"""Models by name, seeded construction, weights-only reload, blocks and the units of EU-k's / CF-k's k."""

from __future__ import annotations

import pytest
import torch

from unlearn_search.errors import UsageError
from unlearn_search.models import (
    MODELS,
    ModelSpec,
    create_model,
    last_k_units,
    load_model,
    max_k,
    model_blocks,
    model_name,
    model_units,
)


@pytest.mark.parametrize("name", [*MODELS.names(), "timm:resnet18"])
def test_every_model_builds_and_runs(name):
    spec = ModelSpec(name, (1, 8, 8), 10)
    model = create_model(spec, seed=0).eval()
    assert model(torch.rand(3, 1, 8, 8)).shape == (3, 10)
    assert len(model_blocks(model)) >= 2


def test_seeded_and_global_rng_untouched():
    spec = ModelSpec("mlp", (1, 8, 8), 10)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b = create_model(spec, seed=5), create_model(spec, seed=5)
    after = torch.rand(1)
    assert torch.equal(before, after)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    c = create_model(spec, seed=6)
    assert not torch.equal(next(a.parameters()), next(c.parameters()))


def test_weights_only_reload_round_trip():
    spec = ModelSpec("cnn", (1, 8, 8), 10)
    m = create_model(spec, seed=1).eval()
    back = load_model(ModelSpec.from_dict(spec.to_dict()), m.state_dict()).eval()
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(m(x), back(x))


def test_unknown_names_list_valid_ones():
    with pytest.raises(UsageError, match="unknown model 'resnet'; valid: cnn, linear, mlp"):
        create_model(ModelSpec("resnet", (1, 8, 8), 10), seed=0)
    with pytest.raises(UsageError, match="unknown timm model 'resnet999'"):
        create_model(ModelSpec("timm:resnet999", (1, 8, 8), 10), seed=0)


@pytest.mark.parametrize("name", ["timm:vit_tiny_patch16_224", "timm:resnet18"])
def test_timm_models_take_32x32_inputs_and_10_classes(name):
    """Fixed-size architectures (ViT) are built for the data's size; others ignore it."""
    model = create_model(ModelSpec(name, (3, 32, 32), 10), seed=0)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def _unit_names(model: torch.nn.Module) -> list[list[str]]:
    names = {id(m): n for n, m in model.named_modules()}
    return [[names[id(b)] for b in unit] for unit in model_units(model)]


@pytest.mark.parametrize(
    ("name", "shape", "units"),
    [
        ("mlp", (1, 8, 8), [["blocks.0"], ["blocks.1", "blocks.2"]]),  # [Flatten-Linear-ReLU], [Linear-ReLU + head]
        ("cnn", (1, 8, 8), [["blocks.0"], ["blocks.1", "blocks.2"]]),  # [conv 1], [conv 2 + head]
        ("linear", (1, 8, 8), [["blocks.1"]]),  # one unit: EU-k / CF-k do not apply
        ("timm:resnet18", (3, 32, 32), [["conv1", "bn1", "layer1"], ["layer2"], ["layer3"], ["layer4", "fc"]]),
    ],
)
def test_units_of_k_end_with_the_last_stage_and_the_head(name, shape, units):
    """EU-k's / CF-k's unit: k = 1 is the last feature stage with the classifier; max_k leaves one unit frozen."""
    model = create_model(ModelSpec(name, shape, 10), seed=0)
    assert _unit_names(model) == units
    assert max_k(model) == len(units) - 1
    assert model_name(model) == name
    assert last_k_units(model, 1) == model_units(model)[-1]
    last_params = {id(p) for m in model_units(model)[-1] for p in m.parameters()}
    if len(units) > 1:  # k = 1 leaves the other units' parameters frozen
        assert any(id(p) not in last_params for p in model.parameters())


def test_units_leave_module_structure_and_state_dict_keys_alone():
    """The grouping is a plain attribute: registered models keep loading from their state dicts."""
    for name in ("mlp", "cnn", "linear"):
        spec = ModelSpec(name, (1, 8, 8), 10)
        model = create_model(spec, seed=0)
        assert all(k.startswith("blocks.") for k in model.state_dict())
        load_model(spec, model.state_dict())  # strict load
