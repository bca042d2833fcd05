"""Models by name: ``mlp``, ``cnn``, ``timm:<architecture>``, a linear head on a frozen network's features
(`frozen`: ``frozen:<model>``), and language models (`text`: ``hf:<name>``, ``gpt2-tiny``, ``gpt2-mini``).

`ModelSpec` is everything needed to rebuild an architecture (name, input shape, classes); with a state dict it
reloads a trainable module without unpickling code. Every model exposes its ordered blocks (input to output)
through `model_blocks`, and its *units* through `model_units`: the unit of EU-k's and CF-k's k, grouped so that
k = 1 is always "the last feature stage together with the classifier head" (`last_k_units`, `max_k`).
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
    input_shape: tuple[int, ...]  # (C, H, W) of an image; (max_length + 2,) of a text row
    n_classes: int
    vocab_size: int = 0  # text models: the tokenizer's vocabulary

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        if not self.vocab_size:
            del d["vocab_size"]  # image specs stay as they were stored before the language track
        return d

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> ModelSpec:
        shape = tuple(int(v) for v in d["input_shape"])  # type: ignore[attr-defined]
        return cls(name=str(d["name"]), input_shape=shape, n_classes=int(str(d["n_classes"])),
                   vocab_size=int(str(d.get("vocab_size", 0))))


def check_model_name(name: str) -> None:
    """Raise `UsageError` for an unknown model name (``timm:<x>`` is checked against timm's list)."""
    from .frozen import check_frozen_name, is_frozen
    from .text import check_text_model_name, is_text_model

    if is_frozen(name):
        check_frozen_name(name)
    elif is_text_model(name):
        check_text_model_name(name)
    elif name.startswith(TIMM_PREFIX):
        from .timm_models import check_timm_name

        check_timm_name(name[len(TIMM_PREFIX):])
    else:
        MODELS.get(name)


def create_model(spec: ModelSpec, seed: int) -> nn.Module:
    """Build ``spec`` with weights initialised from ``seed``, leaving the global RNG untouched."""
    check_model_name(spec.name)
    from .frozen import create_frozen, is_frozen
    from .text import create_text_model, is_text_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if is_frozen(spec.name):
            model = create_frozen(spec.name, _image_shape(spec), spec.n_classes)
        elif is_text_model(spec.name):
            model = create_text_model(spec.name, spec.vocab_size, spec.n_classes, spec.input_shape[0] - 2)
        elif spec.name.startswith(TIMM_PREFIX):
            from .timm_models import create_timm

            model = create_timm(spec.name[len(TIMM_PREFIX):], _image_shape(spec), spec.n_classes)
        else:
            model = MODELS.get(spec.name)(_image_shape(spec), spec.n_classes)
    model.__dict__["registered_name"] = spec.name  # a plain attribute, not in the state dict: names it in messages
    return model


def _image_shape(spec: ModelSpec) -> tuple[int, int, int]:
    c, h, w = spec.input_shape
    return (c, h, w)


def load_model(spec: ModelSpec, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """Rebuild a trainable module from its spec and weights-only state."""
    model = create_model(spec, seed=0)
    model.load_state_dict(state_dict)
    return model


def model_blocks(model: nn.Module) -> list[nn.Module]:
    """The model's blocks in forward order (EU-k's and CF-k's k counts `model_units`, groups of these).

    Our own models (`BlockNet`) define ``blocks``; for other modules (timm) the top-level children that hold
    parameters are the blocks (for a ResNet: stem conv, stem norm, layer1..layer4, classifier). A timm model's
    own ``blocks`` attribute (a ViT's transformer blocks) is one of its children, not its list of blocks.
    """
    from .small import BlockNet

    if isinstance(model, BlockNet):
        return list(model.blocks)
    from .text import TextClassifier

    if isinstance(model, TextClassifier):
        return list(model.unit_blocks()[0])
    return [m for m in model.children() if _has_params(m)]


def model_units(model: nn.Module) -> list[list[nn.Module]]:
    """The units of EU-k's and CF-k's k, in forward order: ``units[-k:]`` are "the last k".

    The last unit is always the last feature stage together with the classifier head, so k = 1 means the same on
    every model; only blocks that hold parameters belong to a unit. Per model:

    - ``mlp``: [Flatten-Linear-ReLU], [Linear-ReLU + Linear head]; ``cnn``: [conv block 1], [conv block 2 + head]:
      two units, k = 1 only;
    - ``linear``: one unit (its single Linear layer): EU-k and CF-k do not apply;
    - language models (`text.TextClassifier`): [embeddings + block 0], [block 1], ..., [last block + final norm +
      head]: k = 1 is the last transformer block with the final norm and the classification head;
    - ``resnet18_cifar``: [stem + layer1], [layer2], [layer3], [layer4 + head (pool, linear)]: k = 1 is layer4 and
      the head, k = 2 adds layer3, k = 3 adds layer2 (the stem is never a unit of its own);
    - other modules (``timm:<name>``): the top-level children that hold parameters, grouped: the classifier (the
      last one) joins the last composite child before it (a child with parametrised submodules, e.g. a residual
      stage), together with any single layers in between (a final norm); single layers before the first
      composite child (a stem such as conv1 + bn1) join it. ``timm:resnet18``: [conv1, bn1, layer1], [layer2],
      [layer3], [layer4, fc], as ``resnet18_cifar``. Parameters owned by the model itself (a ViT's ``cls_token``
      and ``pos_embed``) belong to no unit, so they always stay frozen.

    A `BlockNet` may declare its grouping as ``unit_sizes`` (blocks per unit); otherwise the rule above applies
    to its parametrised blocks.
    """
    blocks = [b for b in model_blocks(model) if _has_params(b)]
    from .text import TextClassifier

    sizes = model.unit_blocks()[1] if isinstance(model, TextClassifier) else getattr(model, "unit_sizes", None)
    if sizes is not None:
        if sum(sizes) != len(blocks):
            raise ValueError(f"unit_sizes {sizes} do not cover the model's {len(blocks)} parametrised blocks")
        out, start = [], 0
        for size in sizes:
            out.append(blocks[start:start + size])
            start += size
        return out
    n = len(blocks)
    if n <= 1:
        return [blocks]
    composite = [i for i in range(n - 1) if _is_composite(blocks[i])]
    head = composite[-1] if composite else n - 2  # the last feature block: the classifier goes with it
    rest = blocks[:head]
    first = next((i for i, b in enumerate(rest) if _is_composite(b)), None)
    if first is None:  # only single layers before the last stage: one stem unit (or none)
        stem_and_middle = [rest] if rest else []
    else:
        stem_and_middle = [rest[:first + 1]] + [[b] for b in rest[first + 1:]]
    return [*stem_and_middle, blocks[head:]]


def max_k(model: nn.Module) -> int:
    """The largest valid k of EU-k / CF-k: units - 1, so at least one unit always stays frozen (0: none valid)."""
    return len(model_units(model)) - 1


def last_k_units(model: nn.Module, k: int) -> list[nn.Module]:
    """The modules of the last ``k`` units (`model_units`), in forward order; k is not checked here (see
    `methods._loop.last_k_blocks`)."""
    units = model_units(model)
    return [m for unit in units[len(units) - k:] for m in unit] if k > 0 else []


def model_name(model: nn.Module) -> str:
    """The registered name a model was built under (``create_model``), else its class name."""
    return str(getattr(model, "registered_name", type(model).__name__))


def _has_params(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def _is_composite(module: nn.Module) -> bool:
    """A block with parametrised submodules (a stage, a residual block), not a single layer (conv, norm, linear)."""
    return any(_has_params(c) for c in module.children())


from . import resnet_cifar as _resnet_cifar  # noqa: E402,F401  (registers "resnet18_cifar")
from . import small as _small  # noqa: E402,F401  (registers "mlp", "cnn")
from . import text as _text  # noqa: E402,F401  (registers "gpt2-tiny", "gpt2-mini")

__all__ = [
    "MODELS",
    "ModelSpec",
    "check_model_name",
    "create_model",
    "last_k_units",
    "load_model",
    "max_k",
    "model_blocks",
    "model_name",
    "model_units",
]
