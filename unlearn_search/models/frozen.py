"""A linear classifier on the features of a frozen network: ``frozen:<backbone>`` (docs/paper.md section 6, H1).

The paper tests its first hypothesis (the poisons move the model further than as many clean points) where it is
made, on a convex problem: logistic regression on the features of a fixed network. ``frozen:<backbone>`` is that
model: the backbone with its classifier removed, every parameter frozen (``requires_grad = False``, always in eval
mode so BatchNorm statistics never move), and a trainable linear head on its features. Every method and the
training loop act on trainable parameters only, so training and unlearning it are logistic regression on fixed
features (softmax cross-entropy is convex in the head).

Backbones:

- ``frozen:timm:<architecture>``: timm's *pretrained* weights (``pretrained=True``), the paper's setting with
  ``timm:resnet18`` on CIFAR-10. The weights come from the Hugging Face hub or its cache; this machine has no hub
  access, so here that path is only tested for its error.
- ``frozen:<built-in model>`` (``mlp``, ``cnn``, ``resnet18_cifar``): the built-in model with its last linear layer
  removed, randomly initialised from a fixed seed (`BACKBONE_SEED`), the same for every model of a scenario
  (poisoned, retrained, control, shadows), so that they all share one feature map and differ only in their heads:
  random features, offline (``frozen:mlp`` on the embedded default).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UsageError

PREFIX = "frozen:"
#: Seed of a built-in backbone's random weights: one feature map for every model of every scenario.
BACKBONE_SEED = 0


class FrozenFeatures(nn.Module):
    """``head(backbone(x))`` with the backbone frozen (no trainable parameter, always in eval mode)."""

    def __init__(self, backbone: nn.Module, n_features: int, n_classes: int) -> None:
        super().__init__()
        self.backbone = backbone.requires_grad_(False).eval()
        self.head = nn.Linear(n_features, n_classes)

    def train(self, mode: bool = True) -> FrozenFeatures:
        super().train(mode)
        self.backbone.eval()  # BatchNorm statistics and dropout of the features never change
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def is_frozen(name: str) -> bool:
    return name.startswith(PREFIX)


def check_frozen_name(name: str) -> None:
    from . import TIMM_PREFIX, check_model_name

    inner = name[len(PREFIX):]
    if is_frozen(inner) or not inner:
        raise UsageError(f"model {name!r} is not valid; valid: frozen:<model> with <model> one of mlp, cnn, "
                         "resnet18_cifar or timm:<architecture>")
    if not inner.startswith(TIMM_PREFIX):
        from .text import is_text_model

        if is_text_model(inner) or inner == "linear":
            raise UsageError(f"model {name!r} is not valid: {inner} has no feature extractor to freeze; valid: "
                             "frozen:<model> with <model> one of mlp, cnn, resnet18_cifar or timm:<architecture>")
    check_model_name(inner)


def create_frozen(name: str, input_shape: tuple[int, int, int], n_classes: int) -> nn.Module:
    """The frozen backbone named by ``name`` (``frozen:<backbone>``) with a fresh linear head (initialised from the
    caller's seed: `models.create_model` seeds the global RNG around this call)."""
    from . import MODELS, TIMM_PREFIX

    inner = name[len(PREFIX):]
    if inner.startswith(TIMM_PREFIX):
        backbone, n_features = _pretrained_timm(inner[len(TIMM_PREFIX):], input_shape)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(BACKBONE_SEED)
            backbone = MODELS.get(inner)(input_shape, n_classes)
        n_features = _drop_last_linear(backbone)
    return FrozenFeatures(backbone, n_features, n_classes)


def _drop_last_linear(model: nn.Module) -> int:
    """Replace the model's last ``nn.Linear`` (its classifier) by the identity; return its input width."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = (name, module)
    if last is None:
        raise UsageError(f"model {type(model).__name__} has no linear classifier to remove for frozen features")
    name, linear = last
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, nn.Identity())
    return linear.in_features


def _pretrained_timm(arch: str, input_shape: tuple[int, int, int]) -> tuple[nn.Module, int]:
    import timm

    try:
        model = timm.create_model(arch, pretrained=True, num_classes=0, in_chans=input_shape[0])
    except Exception as e:  # no network and nothing cached, or no pretrained weights for this architecture
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UsageError(f"model frozen:timm:{arch}: timm's pretrained weights could not be loaded ({first}); they "
                         "come from the Hugging Face hub or its cache (HF_HOME); valid: an architecture with "
                         "pretrained weights, downloaded once online") from None
    return model, int(getattr(model, "num_features"))  # noqa: B009 (a timm attribute torch types as Tensor | Module)
