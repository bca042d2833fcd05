"""Small models for the embedded default: an MLP and a CNN, both as an ordered ``blocks`` list.

The MLP is the digits default: on 8x8 digits it memorises per-example input noise far more than a small CNN
(docs/paper.md 3.1), which is what Gaussian poisoning needs to be visible.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import MODELS


class BlockNet(nn.Module):
    """A sequential network of ``blocks``; EU-k's and CF-k's unit is a group of them (`model_units`).

    ``unit_sizes`` (blocks per unit, in order) declares the grouping where the default rule of `model_units` does
    not fit (a ResNet's stem joins layer1); it is a plain attribute, not part of the state dict.
    """

    def __init__(self, blocks: list[nn.Module], unit_sizes: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.unit_sizes = unit_sizes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


@MODELS.register("mlp")
def mlp(input_shape: tuple[int, int, int], n_classes: int, hidden: int = 256) -> nn.Module:
    """Flatten -> [Linear-ReLU] x 2 -> Linear. Three blocks, two units: k = 1 (the only valid k of EU-k / CF-k) is
    the second Linear-ReLU with the Linear head."""
    d_in = math.prod(input_shape)
    return BlockNet([
        nn.Sequential(nn.Flatten(), nn.Linear(d_in, hidden), nn.ReLU()),
        nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU()),
        nn.Linear(hidden, n_classes),
    ])


@MODELS.register("cnn")
def cnn(input_shape: tuple[int, int, int], n_classes: int, width: int = 32) -> nn.Module:
    """Two conv blocks (3x3 conv, ReLU, 2x2 max-pool), then a linear head. Three blocks, two units: k = 1 (the only
    valid k of EU-k / CF-k) is the second conv block with the head."""
    c, h, w = input_shape
    feat = 2 * width * (h // 4) * (w // 4)
    return BlockNet([
        nn.Sequential(nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Flatten(), nn.Linear(feat, n_classes)),
    ])


@MODELS.register("linear")
def linear(input_shape: tuple[int, int, int], n_classes: int) -> nn.Module:
    """Multinomial logistic regression: Flatten -> Linear. Two blocks (the flatten holds no parameters), one unit:
    EU-k and CF-k do not apply (nothing could stay frozen).

    Convex in its parameters, so a poisoned training set whose loss is stationary at a target parameter steers
    training there: the setting Gradient Canceling targets (docs/paper.md 3.3, docs/attacks.md).
    """
    return BlockNet([nn.Flatten(), nn.Linear(math.prod(input_shape), n_classes)])
