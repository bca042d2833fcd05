"""Poisoning attacks by name.

An attack is configured by a frozen dataclass (``Attack.Config``), crafts a `Poisoning` from a clean `Dataset`,
and evaluates its own harm on a model (``evaluate``). ``removal_metric`` names the metric that poison removal
(docs/paper.md section 5) is computed from, oriented so that larger means more poison effect.
"""

from __future__ import annotations

import io
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..context import RunContext
from ..data import Dataset
from ..registry import Registry
from ..verdict import SUCCESS_RESIDUE, Residue

if TYPE_CHECKING:
    from ..models import ModelSpec
    from ..training import TrainConfig


#: What ``poison_fraction`` takes, in every attack's messages and the docs.
POISON_AMOUNT = "a fraction in (0, 1) or a whole number of poisons >= 1"


def poison_amount(value: Any) -> float | int:
    """Validate an attack's ``poison_fraction``: a fraction in (0, 1) of the training points, or (1 and above) a
    whole number of poisons, which is returned as an ``int`` (so ``750`` and ``750.0`` are one scenario, with one
    hash; a fraction is returned as given, so the hashes of scenarios stored before counts existed are unchanged).
    Anything else raises a one-line `UsageError` naming the value and what is valid."""
    from ..errors import UsageError

    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"poison_fraction={value!r} is not a number; valid: {POISON_AMOUNT}")
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"poison_fraction={value!r} is out of range; valid: {POISON_AMOUNT}")
    if value < 1:
        return value
    if value != int(value):
        raise UsageError(f"poison_fraction={value!r} is neither a fraction below 1 nor a whole number of poisons; "
                         f"valid: {POISON_AMOUNT}")
    return int(value)


def poison_count(value: float | int, n_train: int) -> int:
    """The number of poisons ``poison_fraction`` = ``value`` asks for out of ``n_train`` training points: a
    fraction rounds ``value * n_train``, a count is itself. A count above ``n_train`` raises a one-line
    `UsageError`."""
    from ..errors import UsageError

    value = poison_amount(value)
    k = round(value * n_train) if value < 1 else int(value)
    if k > n_train:
        raise UsageError(f"poison_fraction={value!r} asks for {k} poisons of {n_train} training points; valid: a "
                         f"fraction in (0, 1) or a whole number of poisons 1..{n_train}")
    return k


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

    #: Whether the poisons are added to the training set (its retain set is all of it) rather than replacing
    #: training points (the retain set is the rest): what a compute plan (`plan`) needs to size both trainings.
    adds_points: ClassVar[bool] = False

    def n_poisons(self, n_train: int) -> int:
        """How many poisons this attack crafts out of ``n_train`` training points (`poison_count` of its
        ``poison_fraction``; 0 for an attack without one). The command line calls it before any run starts, so a
        count above the training set fails there."""
        value = getattr(self.cfg, "poison_fraction", None)
        return 0 if value is None else poison_count(value, n_train)

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
    #: How the residue (what is left of the poison per unit) is measured (`verdict.Residue`): by default the
    #: unit's score minus the retrained model's, one-sided.
    residue: ClassVar[Residue] = SUCCESS_RESIDUE

    def residual_pvalue(self, scores_unlearned: np.ndarray, scores_retrain: np.ndarray) -> float:
        """p-value of the residual test "the model still carries the poison" (small = still detected), on the units
        given (the verdict part). Default: a paired one-sided t-test against the retrained model's scores. Attacks
        with a better-founded null override it (Gaussian poisoning: the exact N(0, 1) law of I_z, two-sided)."""
        d = np.asarray(scores_unlearned, float) - np.asarray(scores_retrain, float)
        if len(d) < 2 or np.ptp(d) == 0:
            return 0.0 if len(d) and d[0] > 0 else 1.0
        from scipy import stats

        return float(stats.ttest_1samp(d, 0.0, alternative="greater").pvalue)

    def residual_z(self, scores_unlearned: np.ndarray) -> float:
        """The residual test's signed z-score where it has one that is exactly N(0, 1) without the poison (GUS), for
        the sign-robust combination over seeds; NaN otherwise."""
        return math.nan

    def poison_pvalue(self, scores_poisoned: np.ndarray, scores_retrain: np.ndarray) -> float:
        """One-sided p-value that the *poisoned* model carries the poison on these units: at or above
        `verdict.WEAK_LEVEL` the attack is too weak to judge there."""
        return self.residual_pvalue(scores_poisoned, scores_retrain)

    def residual_min_pvalue(self, n_units: int) -> float:
        """The smallest p-value `residual_pvalue` can return with ``n_units`` scores: when it is not below the
        verdict's level the test cannot ever detect the poison."""
        return 0.0

    def min_part(self) -> int:
        """The fewest units a part of the verdict split may have: the smallest count at which the residual test can
        reject at `verdict.LEVEL` at all, and at least 4 (the equivalence test's regression needs a variance)."""
        from ..verdict import LEVEL

        n = 4
        while self.residual_min_pvalue(n) >= LEVEL and n < 10_000:
            n += 1
        return n

    def n_units(self, data: Dataset) -> int | None:
        """How many units the attack's scores will have on ``data`` (poisons, triggered test points, targets), if
        known before crafting; None when not (checked when the split is made)."""
        return None

    def part_metrics(self, scores: np.ndarray) -> dict[str, float]:
        """The attack's table columns over a subset of the units (the verdict part) from their ``scores``; by default
        the removal metric as the mean score (a success rate)."""
        return {self.removal_metric: float(np.mean(scores))} if len(scores) else {}

    #: The metric of `subset_metrics` that partial discovery's per-subset removal is computed on.
    subset_key: ClassVar[str] = ""

    def subset_metrics(self, scores: np.ndarray) -> dict[str, float] | None:
        """The attack's evidence over a subset of the poisons, from their ``scores`` (partial discovery reports the
        discovered and the undiscovered poisons apart). None (the default): the attack's scores are not one per
        poison (a backdoor's are per triggered test point), so only removal over all poisons is reported."""
        return None

    #: How the per-seed residual tests combine into one over seeds (`verdict.combined_pvalue`): the per-seed
    #: one-sided p-values by Fisher's method by default; GUS combines its z-scores (chi-square + Stouffer).
    seed_combination: ClassVar[str] = "fisher"

    @abstractmethod
    def scores(self, model: nn.Module, data: Dataset, poisoning: Poisoning, ctx: RunContext) -> np.ndarray:
        """Per-unit evidence of the poison (per poison or per target), larger = more poisoned; paired across
        models, so the verdict can test an unlearned model against the retrained one unit by unit."""


class SuccessCountAttack(Attack):
    """An attack whose per-unit scores are 0/1 successes (a triggered input, a target, a test error): the residual
    test is a one-sided Fisher exact test of the unlearned model's successes against the retrained model's (fewer
    successes than retraining is no residue), and the residue of a unit is its success minus the retrained model's."""

    def residual_pvalue(self, scores_unlearned: np.ndarray, scores_retrain: np.ndarray) -> float:
        from scipy import stats

        n = len(scores_unlearned)
        hu, hr = int(np.sum(scores_unlearned)), int(np.sum(scores_retrain))
        return float(stats.fisher_exact([[hu, n - hu], [hr, n - hr]], alternative="greater").pvalue)

    def residual_min_pvalue(self, n_units: int) -> float:
        """Fisher's smallest one-sided p-value, at n successes against none: 1 / C(2n, n) (0.5 for one unit, 0.05
        for three: at least four units are needed to reject at 5%)."""
        return 1.0 / math.comb(2 * n_units, n_units) if n_units > 0 else 1.0


ATTACKS: Registry[type[Attack]] = Registry("attack")

from . import backdoor as _backdoor  # noqa: E402,F401  (registers "backdoor")
from . import gaussian as _gaussian  # noqa: E402,F401  (registers "gaussian")
from . import gradient_canceling as _gradient_canceling  # noqa: E402,F401  (registers "gradient_canceling")
from . import witches_brew as _witches_brew  # noqa: E402,F401  (registers "witches_brew")

__all__ = ["ATTACKS", "POISON_AMOUNT", "Attack", "Poisoning", "SuccessCountAttack", "Victim", "poison_amount",
           "poison_count"]
