"""EU-k: re-initialise the last k units, freeze the rest, train them on the retain set (docs/paper.md 4).

Algorithm: on a working copy, the last ``k`` units of the model (`models.model_units`, input to output order)
get fresh random weights (`reinitialise`, seeded from the run context, drawn on the CPU so the same seed gives
the same weights on any device), every other parameter is frozen (``requires_grad=False``; frozen blocks also
stay in eval mode, see `OnlyLastKTrainable`), and the last k units are trained by cross-entropy descent on
the retain set (`descend`, whose optimizer covers `trainable(model)` only, so weight decay and momentum
cannot move frozen parameters). The returned model has its ``requires_grad`` flags restored (all True for a
normally built model).

The unit of k: k = 1 is always the last feature stage together with the classifier head, as the reference's
"last block" (SCRUB code: ResNet layer4; docs/methods.md says what it leaves out). Per model: ``mlp``: the
second Linear-ReLU and the Linear head; ``cnn``: the second conv block and the head; ``resnet18_cifar`` and
``timm:resnet18``: layer4 and the head (k = 2 adds layer3, k = 3 adds layer2); ``linear``: no valid k (one
unit). Valid k: 1..`models.max_k` (units - 1), so at least one unit stays frozen: k = every unit would
re-initialise the whole network, which is retraining from scratch (the reference, method ``retrain``), and
is refused with a `UsageError` naming the valid range, as is any k beyond it, before any training.

Reference defaults (SCRUB code / CMU benchmark, docs/references.md): k = 1, trained with the full recipe: SGD lr
0.01, momentum 0.9, weight decay 5e-4, 10 epochs, batch 64. Compute: each retain example costs 1 unit although
the frozen blocks need no backward (an upper bound, the same as GD's). Search space: k in 1..max_k of the
scenario's model (the tuner records it as the trial's ``max_k`` user attribute: 1 for our MLP and CNN, 3 for
resnet18_cifar) and a log-uniform lr; epochs 0 (the budget decides).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from ..context import RunContext
from ..errors import UsageError, check_range
from . import Budget, EpochCallback, Splits, UnlearnResult, register_method
from ._loop import OnlyLastKTrainable, last_k_blocks, reinitialise, working_copy
from .gd import descend, validate_sgd_fields

#: ``ctx.child(REINIT_SEED_OFFSET).seed`` seeds the fresh weights (descend shuffles with ``generator(2)``).
REINIT_SEED_OFFSET = 11


@dataclass(frozen=True)
class EUkConfig:
    k: int = 1
    lr: float = 0.01
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    epochs: int = 10
    batch_size: int = 64

    def __post_init__(self) -> None:
        check_range("k", self.k, low=1)  # the upper end (the model's max_k) is checked when the method runs
        validate_sgd_fields(self)


def search_space(trial: Any) -> dict[str, Any]:
    """k in 1..max_k of the model (`models.max_k`, never every unit), which the tuner puts in the trial's
    ``max_k`` user attribute (1 when absent: our MLP and CNN); a log-uniform lr."""
    top = int(getattr(trial, "user_attrs", {}).get("max_k", 1))
    if top < 1:
        raise UsageError("EU-k and CF-k do not apply to a model with a single unit (max_k = 0): nothing would stay "
                         "frozen; use method 'retrain' or 'gd'")
    return {
        "k": trial.suggest_int("k", 1, top),
        "lr": trial.suggest_float("lr", 1e-4, 1e-1, log=True),
        "epochs": 0,  # the searched budget decides how long it runs
    }


def reinitialise_blocks(blocks: list[nn.Module], seed: int) -> None:
    """Fresh weights for ``blocks`` from one seeded stream, drawn on the CPU, then moved back."""
    holder = nn.ModuleList(blocks)  # shares the modules: one RNG stream over all k blocks, in order
    first = next(holder.parameters(), None)
    if first is None:
        return
    device = first.device
    holder.cpu()
    reinitialise(holder, seed)
    holder.to(device)


def check_k(cfg: EUkConfig, model: nn.Module) -> None:
    """k must be in 1..max_k of the model (raises a one-line `UsageError` with the valid range)."""
    last_k_blocks(model, cfg.k, "eu_k")


@register_method("eu_k", EUkConfig, search_space, check=check_k)
def eu_k(
    model: nn.Module,
    splits: Splits,
    cfg: EUkConfig,
    budget: Budget,
    ctx: RunContext,
    on_epoch: EpochCallback | None = None,
) -> UnlearnResult:
    work = working_copy(model, ctx)
    freeze = OnlyLastKTrainable(work, cfg.k, "eu_k")  # raises UsageError unless 1 <= k <= max_k
    with freeze as last:
        reinitialise_blocks(last, ctx.child(REINIT_SEED_OFFSET).seed)
        result = descend(work, splits, cfg, budget, ctx, on_epoch)
    result.info["k"] = float(cfg.k)
    return result
