"""The CIFAR ResNet-18: architecture pinned by its parameter count, blocks for EU-k / CF-k, and timm on 32x32."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unlearn_search.models import ModelSpec, create_model, last_k_units, max_k, model_blocks, model_units


@pytest.fixture(scope="module")
def resnet():
    return create_model(ModelSpec("resnet18_cifar", (3, 32, 32), 10), seed=0).eval()


def test_parameter_count_and_logits(resnet):
    assert sum(p.numel() for p in resnet.parameters()) == 11_173_962
    with torch.no_grad():
        assert resnet(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_cifar_stem_and_block_resolutions(resnet):
    assert not any(isinstance(m, nn.MaxPool2d) for m in resnet.modules())
    blocks = model_blocks(resnet)
    assert len(blocks) == 6  # stem, layer1..layer4, head
    stem_conv = blocks[0][0]
    assert stem_conv.kernel_size == (3, 3) and stem_conv.stride == (1, 1) and stem_conv.padding == (1, 1)
    assert isinstance(blocks[-1][-1], nn.Linear) and blocks[-1][-1].in_features == 512
    shapes, h = [], torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        for block in blocks:
            h = block(h)
            shapes.append(tuple(h.shape[1:]))
    assert shapes == [(64, 32, 32), (64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (10,)]
    assert [len(b) for b in blocks[1:5]] == [2, 2, 2, 2]  # BasicBlocks [2, 2, 2, 2]


def test_units_of_k_are_stem_with_layer1_then_layer2_layer3_then_layer4_with_the_head(resnet):
    """EU-k / CF-k: k = 1 is layer4 with the head (pool, linear), k = 2 adds layer3, k = 3 adds layer2; the stem is
    never a unit of its own and k = 4 (everything) is not a valid k."""
    stem, layer1, layer2, layer3, layer4, head = model_blocks(resnet)
    assert model_units(resnet) == [[stem, layer1], [layer2], [layer3], [layer4, head]]
    assert max_k(resnet) == 3
    assert last_k_units(resnet, 1) == [layer4, head]
    assert last_k_units(resnet, 2) == [layer3, layer4, head]
    assert last_k_units(resnet, 3) == [layer2, layer3, layer4, head]
    assert len(list(resnet.state_dict())) == 122 and all(k.startswith("blocks.") for k in resnet.state_dict())


def test_seeded_and_other_channels():
    spec = ModelSpec("resnet18_cifar", (1, 28, 28), 7)
    a, b = create_model(spec, seed=3), create_model(spec, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(model_blocks(a)[0][0].weight, model_blocks(create_model(spec, seed=4))[0][0].weight)
    with torch.no_grad():
        assert a.eval()(torch.rand(2, 1, 28, 28)).shape == (2, 7)


def test_timm_resnet18_on_cifar_shapes():
    model = create_model(ModelSpec("timm:resnet18", (3, 32, 32), 10), seed=0).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
