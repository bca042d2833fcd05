"""ResNet-18 for CIFAR-sized inputs (He et al., *Deep Residual Learning for Image Recognition*, CVPR 2016, sec. 4.2).

The paper's model (docs/paper.md 7: ResNet-18 on CIFAR-10, variant unknown) taken as the common CIFAR variant: the
ImageNet ResNet-18 (BasicBlocks [2, 2, 2, 2], widths 64-128-256-512, global average pool, linear head) with its
7x7 stride-2 stem conv replaced by a 3x3 stride-1 conv and no stem max-pool, so a 32x32 input keeps 32x32 in
layer1 and reaches 4x4 in layer4. 11,173,962 parameters with 3 input channels and 10 classes.

Built from timm's ResNet (its BasicBlock, batch norm, init), only the stem swapped; ``zero_init_last=False``: the
last batch norm of each residual branch starts at weight 1, as in the standard CIFAR recipe. The blocks: stem (conv,
bn, relu), layer1, layer2, layer3, layer4, head (pool, linear). EU-k's and CF-k's units (`model_units`) group them
as [stem + layer1], [layer2], [layer3], [layer4 + head]: k = 1 is layer4 with the head (the reference's last block),
k = 2 adds layer3, k = 3 adds layer2; k = 4 would be the whole network (refused: that is retraining / GD).
"""

from __future__ import annotations

from typing import Any

import timm
from torch import nn

from . import MODELS
from .small import BlockNet

#: Blocks per unit of EU-k / CF-k: [stem, layer1], [layer2], [layer3], [layer4, head].
UNIT_SIZES = (2, 1, 1, 2)


@MODELS.register("resnet18_cifar")
def resnet18_cifar(input_shape: tuple[int, int, int], n_classes: int) -> nn.Module:
    net: Any = timm.create_model("resnet18", pretrained=False, num_classes=n_classes, in_chans=input_shape[0],
                            zero_init_last=False)
    conv = nn.Conv2d(input_shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # as timm initialises its convs
    return BlockNet([
        nn.Sequential(conv, net.bn1, net.act1),  # no max-pool
        net.layer1, net.layer2, net.layer3, net.layer4,
        nn.Sequential(net.global_pool, net.fc),  # (B, 512, h, w) -> (B, 512) -> (B, n_classes)
    ], unit_sizes=UNIT_SIZES)

