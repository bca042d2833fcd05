"""One unlearning run judged against the scenario's references (no MLflow, no Optuna).

Shared by the method entry points and the tuner: run a registered method on the poisoned model within a budget,
then score the result exactly as the references were scored, and add ``removal`` and the verdict.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from . import verdict
from .context import RunContext
from .errors import check_range
from .methods import Budget, EpochCallback, Method, Splits
from .scenario import Scenario, evaluate_with_scores
from .training import NonFiniteOutputs

#: ``ctx.generator`` offset of the order in which poisons are discovered (partial discovery).
DISCOVERY_OFFSET = 151


def splits_of(scenario: Scenario, told: np.ndarray | None = None) -> Splits:
    """forget = the poisons as the poisoned model saw them; retain = the rest of the training set. With ``told``
    (partial discovery: a mask over the poisons), forget = the told poisons only, and the others join the retain
    set as they were trained on (the method takes them for clean data)."""
    xf, yf = scenario.forget
    xr, yr = scenario.retain
    if told is None or told.all():
        return Splits(x_forget=xf, y_forget=yf, x_retain=xr, y_retain=yr)
    keep = torch.from_numpy(told)
    return Splits(x_forget=xf[keep], y_forget=yf[keep], x_retain=torch.cat([xr, xf[~keep]]),
                  y_retain=torch.cat([yr, yf[~keep]]))


def check_discovered_fraction(value: float) -> None:
    check_range("discovered_fraction", value, low=0, high=1, low_open=True)


def discovered_mask(n_poison: int, fraction: float, ctx: RunContext) -> np.ndarray:
    """Which poisons the method is told: the first ``round(fraction * n_poison)`` (at least one) of a seeded
    permutation, so the subsets of one scenario are nested (the poisons told at 0.1 are among those told at 0.5)
    and every method of a comparison is told the same ones."""
    check_discovered_fraction(fraction)
    order = torch.randperm(n_poison, generator=ctx.generator(offset=DISCOVERY_OFFSET)).numpy()
    told = np.zeros(n_poison, dtype=bool)
    told[order[:max(1, round(fraction * n_poison))]] = True
    return told


@dataclass(frozen=True)
class Discovery:
    """Partial discovery (the corrective-unlearning setting): the method is told only the poisons where ``told``
    is True. ``reference`` holds the references' evidence on each part (role -> metrics named
    ``<metric>_discovered`` / ``<metric>_undiscovered``), for the removal of each part."""

    fraction: float
    told: np.ndarray
    reference: dict[str, dict[str, float]]

    @classmethod
    def of(cls, scenario: Scenario, fraction: float, poisoned_scores: np.ndarray, retrain_scores: np.ndarray,
           ctx: RunContext) -> Discovery:
        told = discovered_mask(scenario.poisoning.n_poison, fraction, ctx)
        ref = {role: _parts(scenario, told, scores) for role, scores in (("poisoned", poisoned_scores),
                                                                          ("retrain", retrain_scores))}
        return cls(fraction, told, ref)


def _parts(scenario: Scenario, told: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """The attack's per-subset metrics on the told and the untold poisons (none if its scores are not per poison
    or a part is empty)."""
    out: dict[str, float] = {}
    if len(scores) != len(told):
        return out
    for part, sel in (("discovered", told), ("undiscovered", ~told)):
        if sel.any():
            found = scenario.attack.subset_metrics(scores[sel]) or {}
            out.update({f"{k}_{part}": v for k, v in found.items()})
    return out


class Diverged(RuntimeError):
    """The method left non-finite weights (gradient ascent often does); there is no model to judge."""


@dataclass(frozen=True)
class Outcome:
    model: nn.Module
    metrics: dict[str, float]
    scores: np.ndarray  # per-poison evidence (I_z for Gaussian poisoning)


def judge(
    model: nn.Module,
    scenario: Scenario,
    reference_metrics: dict[str, dict[str, float]],
    retrain_scores: np.ndarray,
    ctx: RunContext,
    utility_tolerance: float = verdict.UTILITY_TOLERANCE,
) -> tuple[dict[str, float], np.ndarray]:
    """Evaluate ``model`` like the references, plus ``removal``, ``removal_pvalue`` and ``poison_removed``."""
    attack = scenario.attack
    m, scores = evaluate_with_scores(model, scenario, ctx)
    key = attack.removal_metric
    m["removal"] = verdict.removal(reference_metrics["poisoned"][key], reference_metrics["retrain"][key], m[key])
    m["removal_pvalue"] = attack.residual_pvalue(scores, retrain_scores)
    min_p = attack.residual_min_pvalue(len(scores))
    m["residual_test_powered"] = float(min_p < verdict.LEVEL)
    undetected = verdict.undetected(m["removal_pvalue"], min_p, m[key], reference_metrics["retrain"][key])
    removed = verdict.poison_removed(undetected, m["test_acc"], reference_metrics["poisoned"]["test_acc"],
                                     utility_tolerance=utility_tolerance)
    m["poison_removed"] = float(removed)
    return m, scores


def unlearn(
    method: Method,
    cfg: Any,
    budget_fraction: float,
    scenario: Scenario,
    poisoned: nn.Module,
    reference_metrics: dict[str, dict[str, float]],
    retrain_scores: np.ndarray,
    ctx: RunContext,
    on_epoch: EpochCallback | None = None,
    utility_tolerance: float = verdict.UTILITY_TOLERANCE,
    discovery: Discovery | None = None,
) -> Outcome:
    """Run ``method`` and judge its model; with ``discovery`` the method is told only part of the poisons, and
    removal and the attack's evidence are reported over all poisons and over each part apart."""
    budget = Budget(budget_fraction, scenario.retrain_cost)
    start = time.perf_counter()
    told = None if discovery is None else discovery.told
    with ctx.seeded_global_rng(5):  # dropout of a language model: the same trial gives the same numbers
        result = method.run(poisoned, splits_of(scenario, told), cfg, budget, ctx, on_epoch=on_epoch)
    wall = time.perf_counter() - start
    finite = all(bool(torch.isfinite(p).all()) for p in result.model.parameters())
    if result.info.get("diverged") or not finite:
        raise Diverged(f"{method.name} diverged (non-finite weights) after {result.compute_used:.0f} example-passes")
    start = time.perf_counter()
    try:
        metrics, scores = judge(result.model, scenario, reference_metrics, retrain_scores, ctx, utility_tolerance)
    except NonFiniteOutputs as e:
        raise Diverged(f"{method.name} diverged (finite weights, but {e}: the model's outputs overflow) after "
                       f"{result.compute_used:.0f} example-passes") from None
    metrics.update({
        "compute_used": result.compute_used,
        "budget_used": result.compute_used / scenario.retrain_cost,
        "wall_time_s": wall,  # the method's run, including whatever its on_epoch callback did
        "eval_time_s": time.perf_counter() - start,
        **{f"info.{k}": v for k, v in result.info.items()},
    })
    if discovery is not None:
        metrics.update(_discovery_metrics(scenario, discovery, scores))
    return Outcome(result.model, metrics, scores)


def _discovery_metrics(scenario: Scenario, discovery: Discovery, scores: np.ndarray) -> dict[str, float]:
    out = {"discovered_fraction": discovery.fraction, "n_discovered": float(discovery.told.sum())}
    parts = _parts(scenario, discovery.told, scores)
    out.update(parts)
    key = scenario.attack.subset_key
    for part in ("discovered", "undiscovered"):
        name = f"{key}_{part}"
        if name in parts:
            ref = discovery.reference
            out[f"removal_{part}"] = verdict.removal(ref["poisoned"][name], ref["retrain"][name], parts[name])
    return out
