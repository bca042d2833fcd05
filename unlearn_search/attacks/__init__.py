"""Poisoning attacks by name.

An attack is configured by a frozen dataclass (``Attack.Config``), crafts a `Poisoning` from a clean `Dataset`,
and evaluates its own harm on a model (``evaluate``). ``removal_metric`` names the metric that poison removal
(PAPER.md section 5) is computed from, oriented so that larger means more poison effect.
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..context import RunContext
from ..data import Dataset
from ..registry import Registry

if TYPE_CHECKING:
    from ..models import ModelSpec
    from ..training import TrainConfig


@dataclass(frozen=True)
class Victim:
    """The model recipe the scenario trains on the poisoned data: what a model-aware attack (Witches' Brew,
    Gradient Canceling) crafts against. The attacker knows the architecture and recipe, not the victim's seed."""

    spec: ModelSpec
    train: TrainConfig


@dataclass(frozen=True)
class Poisoning:
    """What an attack did to the training set.

    ``indices``: training points whose clean originals were removed (they are replaced by the poisons);
    ``x_poison``/``y_poison``: the poison points, row i derived from ``indices[i]`` where the attack perturbs
    existing points; ``arrays``: attack-specific state kept for evaluation (e.g. Gaussian noise).
    """

    indices: torch.Tensor  # (k,) int64
    x_poison: torch.Tensor  # (k, C, H, W)
    y_poison: torch.Tensor  # (k,)
    arrays: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def n_poison(self) -> int:
        return len(self.x_poison)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        arrays: dict[str, np.ndarray] = {
            "indices": self.indices.numpy(),
            "x_poison": self.x_poison.numpy(),
            "y_poison": self.y_poison.numpy(),
            **{f"arr_{k}": v.numpy() for k, v in self.arrays.items()},
        }
        np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Poisoning:
        with np.load(io.BytesIO(data)) as z:
            arrays = {k[4:]: torch.from_numpy(z[k]) for k in z.files if k.startswith("arr_")}
            return cls(
                indices=torch.from_numpy(z["indices"]),
                x_poison=torch.from_numpy(z["x_poison"]),
                y_poison=torch.from_numpy(z["y_poison"]),
                arrays=arrays,
            )


class Attack(ABC):
    """Base class of attacks; subclasses set ``Config`` and ``removal_metric`` and register themselves."""

    name: ClassVar[str]
    Config: ClassVar[type]
    removal_metric: ClassVar[str]
    #: (metric key, column title) of the attack's own metrics in tables, in order.
    columns: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    #: Parameters every attack's command line carries; an attack whose config lacks one ignores it.
    SHARED_PARAMS: ClassVar[tuple[str, ...]] = ("poison_fraction", "eps")

    @classmethod
    def config_from(cls, params: dict[str, Any]) -> Any:
        """Build the config from a flat parameter dict. Unknown keys raise `UsageError` naming the valid ones,
        except the shared command-line parameters, which an attack without them ignores."""
        names = {f.name for f in fields(cls.Config)}
        unknown = sorted(k for k in params if k not in names and k not in Attack.SHARED_PARAMS)
        if unknown:
            from ..errors import UsageError

            raise UsageError(f"unknown attack parameter(s) {', '.join(unknown)} for attack {cls.name!r}; "
                             f"valid: {', '.join(sorted(names))}")
        return cls.Config(**{k: v for k, v in params.items() if k in names and v is not None})

    @classmethod
    def check_recipe(cls, model: str, train: TrainConfig) -> None:
        """Raise `UsageError` if the attack cannot work against this victim model and recipe (checked when the
        scenario is configured, before anything runs); most attacks work against any."""
        return None

    def check_data(self, data: Dataset) -> None:
        """Raise `UsageError` if the attack's parameters cannot apply to ``data`` (e.g. a trigger larger than the
        images); the command line calls it before any run starts. Most attacks fit any data."""
        return None

    @abstractmethod
    def craft(self, data: Dataset, ctx: RunContext, victim: Victim | None = None) -> Poisoning:
        """Build the poisons from the clean training set; model-aware attacks require ``victim``."""

    @abstractmethod
    def evaluate(self, model: nn.Module, data: Dataset, poisoning: Poisoning, ctx: RunContext) -> dict[str, float]:
        """The attack's own metrics on ``model`` (e.g. GUS)."""

    def evaluate_with_scores(
        self, model: nn.Module, data: Dataset, poisoning: Poisoning, ctx: RunContext
    ) -> tuple[dict[str, float], np.ndarray]:
        """``evaluate`` and ``scores`` together; attacks override it to share work between the two."""
        return self.evaluate(model, data, poisoning, ctx), self.scores(model, data, poisoning, ctx)

    #: How `residual_pvalue` tests, in words (logged and printed with the verdict).
    residual_test: ClassVar[str] = "paired one-sided t-test of per-unit scores against the retrained model"

    def residual_pvalue(self, scores_unlearned: np.ndarray, scores_retrain: np.ndarray) -> float:
        """One-sided p-value for "the unlearned model still carries the poison" (small = still detected).

        Default: a paired one-sided t-test against the retrained model's scores. Attacks with a better-founded
        null override it (Gaussian poisoning: the exact N(0, 1) law of I_z for any model that never saw the noise).
        """
        from ..verdict import paired_pvalue

        return paired_pvalue(scores_unlearned, scores_retrain)

    def residual_min_pvalue(self, n_units: int) -> float:
        """The smallest p-value `residual_pvalue` can return with ``n_units`` scores: when it is not below the
        verdict's level the test cannot ever detect the poison, and the verdict must not read "removed" into it."""
        return 0.0

    #: How the per-seed p-values of `residual_pvalue` combine into one verdict over seeds
    #: (`verdict.combined_pvalue`): Stouffer's z for continuous tests (for GUS the per-seed z-scores themselves).
    seed_combination: ClassVar[str] = "stouffer"

    @abstractmethod
    def scores(self, model: nn.Module, data: Dataset, poisoning: Poisoning, ctx: RunContext) -> np.ndarray:
        """Per-unit evidence of the poison (per poison or per target), larger = more poisoned; paired across
        models, so the verdict can test an unlearned model against the retrained one unit by unit."""


class SuccessCountAttack(Attack):
    """An attack whose per-unit scores are 0/1 successes (a triggered input, a target, a test error): the residual
    test is a one-sided Fisher exact test of the unlearned model's successes against the retrained model's."""

    def residual_pvalue(self, scores_unlearned: np.ndarray, scores_retrain: np.ndarray) -> float:
        from scipy import stats

        n = len(scores_unlearned)
        hu, hr = int(np.sum(scores_unlearned)), int(np.sum(scores_retrain))
        return float(stats.fisher_exact([[hu, n - hu], [hr, n - hr]], alternative="greater").pvalue)

    def residual_min_pvalue(self, n_units: int) -> float:
        """Fisher's smallest one-sided p-value, at n successes against none: 1 / C(2n, n) (0.5 for one unit, 0.05
        for three: at least four units are needed to reject at 5%)."""
        import math

        return 1.0 / math.comb(2 * n_units, n_units) if n_units > 0 else 1.0

    #: Fisher's method: a discrete test's p = 1 (no success left) adds nothing, where Stouffer would turn it into a
    #: spurious -8 sigma that cancels another seed's strong evidence.
    seed_combination: ClassVar[str] = "fisher"


ATTACKS: Registry[type[Attack]] = Registry("attack")

from . import backdoor as _backdoor  # noqa: E402,F401  (registers "backdoor")
from . import gaussian as _gaussian  # noqa: E402,F401  (registers "gaussian")
from . import gradient_canceling as _gradient_canceling  # noqa: E402,F401  (registers "gradient_canceling")
from . import witches_brew as _witches_brew  # noqa: E402,F401  (registers "witches_brew")

__all__ = ["ATTACKS", "Attack", "Poisoning", "SuccessCountAttack", "Victim"]
