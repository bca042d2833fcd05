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
from .methods import Budget, EpochCallback, Method, Splits
from .scenario import Scenario, evaluate_with_scores
from .training import NonFiniteOutputs


def splits_of(scenario: Scenario) -> Splits:
    """forget = the poisons as the poisoned model saw them; retain = the rest of the training set."""
    xf, yf = scenario.forget
    xr, yr = scenario.retain
    return Splits(x_forget=xf, y_forget=yf, x_retain=xr, y_retain=yr)


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
) -> Outcome:
    budget = Budget(budget_fraction, scenario.retrain_cost)
    start = time.perf_counter()
    with ctx.seeded_global_rng(5):  # dropout of a language model: the same trial gives the same numbers
        result = method.run(poisoned, splits_of(scenario), cfg, budget, ctx, on_epoch=on_epoch)
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
    return Outcome(result.model, metrics, scores)
