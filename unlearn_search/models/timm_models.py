"""Any timm architecture by name (``timm:resnet18``), adapted to the data's channels and classes.

timm builds the model with ``in_chans`` and ``num_classes`` set, randomly initialised (``pretrained=False``: no
network). Whether an architecture suits tiny inputs (8x8 digits) is the user's choice; timm's own error is passed
on if it does not.
"""

from __future__ import annotations

from typing import Any

import timm
from torch import nn

from ..errors import UsageError


def check_timm_name(name: str) -> None:
    if name not in timm.list_models():
        close = timm.list_models(f"*{name}*")[:10]
        hint = f"close matches: {', '.join(close)}" if close else "see timm.list_models()"
        raise UsageError(f"unknown timm model {name!r}; valid: any name in timm.list_models() ({hint})")


def create_timm(name: str, input_shape: tuple[int, int, int], n_classes: int) -> nn.Module:
    """Architectures with a fixed input size (ViT, DeiT, ...) are built for the data's size (``img_size``);
    the others do not take that argument and are built without it."""
    kwargs: dict[str, Any] = {"pretrained": False, "num_classes": n_classes, "in_chans": input_shape[0]}
    try:
        model: nn.Module = timm.create_model(name, img_size=input_shape[1:], **kwargs)
    except TypeError:
        model = timm.create_model(name, **kwargs)
    return model
