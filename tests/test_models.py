"""Models by name, seeded construction, weights-only reload, blocks."""

from __future__ import annotations

import pytest
import torch

from unlearn_search.errors import UsageError
from unlearn_search.models import MODELS, ModelSpec, create_model, load_model, model_blocks


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
