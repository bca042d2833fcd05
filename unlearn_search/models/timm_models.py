"""Any timm architecture by name (``timm:resnet18``), adapted to the data's channels and classes.

timm builds the model with ``in_chans`` and ``num_classes`` set, randomly initialised (``pretrained=False``: no
network). Whether an architecture suits tiny inputs (8x8 digits) is the user's choice; timm's own error is passed
on if it does not.
"""

from __future__ import annotations

import timm
from torch import nn

from ..errors import UsageError


def check_timm_name(name: str) -> None:
    if name not in timm.list_models():
        close = timm.list_models(f"*{name}*")[:10]
        hint = f"close matches: {', '.join(close)}" if close else "see timm.list_models()"
        raise UsageError(f"unknown timm model {name!r}; valid: any name in timm.list_models() ({hint})")


def create_timm(name: str, input_shape: tuple[int, int, int], n_classes: int) -> nn.Module:
    model: nn.Module = timm.create_model(name, pretrained=False, num_classes=n_classes, in_chans=input_shape[0])
    return model
