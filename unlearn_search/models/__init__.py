"""Models by name: ``mlp``, ``cnn`` and ``timm:<architecture>``.

`ModelSpec` is everything needed to rebuild an architecture (name, input shape, classes); with a state dict it
reloads a trainable module without unpickling code. Every model exposes its ordered blocks (input to output)
through `model_blocks`, which EU-k and CF-k use to pick "the last k".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..registry import Registry

#: A builder takes (input_shape, n_classes) and returns an untrained module.
Builder = Callable[[tuple[int, int, int], int], nn.Module]

MODELS: Registry[Builder] = Registry("model")
TIMM_PREFIX = "timm:"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    input_shape: tuple[int, int, int]
    n_classes: int

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> ModelSpec:
        c, h, w = (int(v) for v in d["input_shape"])  # type: ignore[attr-defined]
        return cls(name=str(d["name"]), input_shape=(c, h, w), n_classes=int(str(d["n_classes"])))


def check_model_name(name: str) -> None:
    """Raise `UsageError` for an unknown model name (``timm:<x>`` is checked against timm's list)."""
    if name.startswith(TIMM_PREFIX):
        from .timm_models import check_timm_name

        check_timm_name(name[len(TIMM_PREFIX):])
    else:
        MODELS.get(name)


def create_model(spec: ModelSpec, seed: int) -> nn.Module:
    """Build ``spec`` with weights initialised from ``seed``, leaving the global RNG untouched."""
    check_model_name(spec.name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if spec.name.startswith(TIMM_PREFIX):
            from .timm_models import create_timm

            return create_timm(spec.name[len(TIMM_PREFIX):], spec.input_shape, spec.n_classes)
        return MODELS.get(spec.name)(spec.input_shape, spec.n_classes)


def load_model(spec: ModelSpec, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """Rebuild a trainable module from its spec and weights-only state."""
    model = create_model(spec, seed=0)
    model.load_state_dict(state_dict)
    return model


def model_blocks(model: nn.Module) -> list[nn.Module]:
    """The model's blocks in forward order; ``blocks[-k:]`` are "the last k" of EU-k / CF-k.

    Our own models define ``blocks`` (an `nn.ModuleList`); for other modules (timm) the top-level children that
    hold parameters are the blocks (for a ResNet: stem conv, stem norm, layer1..layer4, classifier).
    """
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.ModuleList):
        return list(blocks)
    return [m for m in model.children() if next(m.parameters(), None) is not None]


from . import resnet_cifar as _resnet_cifar  # noqa: E402,F401  (registers "resnet18_cifar")
from . import small as _small  # noqa: E402,F401  (registers "mlp", "cnn")

__all__ = ["MODELS", "ModelSpec", "check_model_name", "create_model", "load_model", "model_blocks"]
