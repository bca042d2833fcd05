"""One unlearning run judged against the scenario's references (no MLflow, no Optuna).

Shared by the method entry points and the tuner: run a registered method on the poisoned model within a budget,
then score the result exactly as the references were scored, and add ``removal`` and the verdict.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from . import verdict
from .attacks import Attack
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


#: ``ctx.generator``-style offset of the seeded selection / verdict split of the units.
SPLIT_OFFSET = 173


@dataclass(frozen=True)
class Yardstick:
    """What every model of a scenario is judged against (`verdict`): the references' per-unit scores, the seeded
    split of the units into the part the search selects on (``select``) and the verdict part (the rest), and the
    equivalence margin (a fraction of the poisoned model's residue)."""

    poisoned: np.ndarray
    retrain: np.ndarray
    select: np.ndarray  # bool over units: True = selection part
    margin: float = verdict.EQUIVALENCE_MARGIN
    select_fraction: float = verdict.SELECT_FRACTION

    @classmethod
    def of(cls, attack: Attack, poisoned: np.ndarray, retrain: np.ndarray, ctx: RunContext,
           select_fraction: float = verdict.SELECT_FRACTION,
           margin: float = verdict.EQUIVALENCE_MARGIN) -> Yardstick:
        """The split seeded from the scenario's seed; a part with fewer units than the attack's residual test needs
        to reject at all raises a one-line `UsageError`."""
        verdict.check_fraction("equivalence_margin", margin)
        check_split(attack, len(retrain), select_fraction)
        select = verdict.split_mask(len(retrain), select_fraction, ctx.seed * 1000 + SPLIT_OFFSET)
        return cls(np.asarray(poisoned, float), np.asarray(retrain, float), select, margin, select_fraction)

    @classmethod
    def of_models(cls, scenario: Scenario, models: dict[str, nn.Module], ctx: RunContext,
                  select_fraction: float = verdict.SELECT_FRACTION,
                  margin: float = verdict.EQUIVALENCE_MARGIN) -> Yardstick:
        """`of` with the per-unit scores of the scenario's ``poisoned`` and ``retrain`` models."""
        attack = scenario.attack
        scores = {role: attack.scores(models[role], scenario.data, scenario.poisoning, ctx)
                  for role in ("poisoned", "retrain")}
        return cls.of(attack, scores["poisoned"], scores["retrain"], ctx, select_fraction, margin)

    def references(self, attack: Attack, metrics: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        """The references' ``metrics`` with the attack's columns, removal and the tests on the verdict part (what
        the table's "no unlearning" and "retrain" rows show beside the methods', which are judged there too)."""
        out = {role: {**metrics[role], **self.judge(attack, scores)}
               for role, scores in (("poisoned", self.poisoned), ("retrain", self.retrain))}
        weak = bool(out["poisoned"]["attack_too_weak"])
        out["poisoned"]["removal"], out["retrain"]["removal"] = (math.nan, math.nan) if weak else (0.0, 1.0)
        return out

    @property
    def verdict_units(self) -> np.ndarray:
        return np.flatnonzero(~self.select)

    def selection(self, attack: Attack, scores: np.ndarray) -> dict[str, float]:
        """The search's view, on the selection part only: ``removal_select`` and ``objective`` (closeness to the
        null, `verdict.objective`)."""
        res, s = attack.residue, self.select
        r = self.retrain[s]
        est_u = res.estimate(res.values(np.asarray(scores, float)[s], r), r)
        est_p = res.estimate(res.values(self.poisoned[s], r), r)
        return {"removal_select": verdict.removal_from(est_u.value, est_p.value),
                "objective": verdict.objective(est_u.value, est_p.value)}

    def judge(self, attack: Attack, scores: np.ndarray) -> dict[str, float]:
        """The verdict part's evidence: the attack's columns, removal, the residual test, the equivalence test and
        what an inconclusive answer would need (without the utility gate, which `judge` adds)."""
        res, v = attack.residue, ~self.select
        u, p, r = np.asarray(scores, float)[v], self.poisoned[v], self.retrain[v]
        est_u, est_p = res.estimate(res.values(u, r), r), res.estimate(res.values(p, r), r)
        raw = res.values(u, r)
        raw_se = 1 / np.sqrt(len(raw)) if res.exact_null else float(np.std(raw, ddof=1) / np.sqrt(len(raw)))
        too_weak = attack.poison_pvalue(p, r) >= verdict.WEAK_LEVEL
        eq = verdict.equivalence(res, u, p, r, self.margin)
        margin_abs = self.margin * est_p.value
        out = {**attack.part_metrics(u),
               "removal": math.nan if too_weak else verdict.removal_from(est_u.value, est_p.value),
               "removal_pvalue": attack.residual_pvalue(u, r), "residual_z": attack.residual_z(u),
               "equivalence_pvalue": eq.pvalue, "residue": est_u.value, "residue_se": est_u.se,
               "residue_raw": float(np.mean(raw)), "residue_raw_se": float(raw_se),
               "poisoned_residue": est_p.value, "equivalence_margin_abs": margin_abs,
               "equiv_upper": eq.upper.value, "equiv_upper_se": eq.upper.se,
               "attack_too_weak": float(too_weak), "verdict_units": float(len(u))}
        if eq.lower is not None:
            out.update({"equiv_lower": eq.lower.value, "equiv_lower_se": eq.lower.se})
        out["needed_factor"] = verdict.needed_factor(est_u.value, est_u.se, abs(margin_abs), out["residue_raw"],
                                                     raw_se, res.two_sided)
        return out


def check_split(attack: Attack, n_units: int, select_fraction: float) -> None:
    """Refuse a split fraction outside (0, 1), or a split that leaves a part with fewer units than the attack's
    residual test needs to reject at all (`Attack.min_part`): one-line `UsageError`."""
    from .errors import UsageError

    verdict.check_fraction("select_fraction", select_fraction)
    k = min(max(1, round(select_fraction * n_units)), max(n_units - 1, 0))
    need = attack.min_part()
    if min(k, n_units - k) < need:
        raise UsageError(f"{n_units} units ({attack.name}: poisons, targets or triggered test points) split at "
                         f"select_fraction={select_fraction:g} give parts of {k} and {n_units - k}; valid: at least "
                         f"{need} in each part (the fewest at which its test can reject at {verdict.LEVEL}), so at "
                         f"least {2 * need} units, or another select_fraction")


@dataclass(frozen=True)
class Outcome:
    model: nn.Module
    metrics: dict[str, float]
    scores: np.ndarray  # per-poison evidence (I_z for Gaussian poisoning)


def judge(
    model: nn.Module,
    scenario: Scenario,
    reference_metrics: dict[str, dict[str, float]],
    yard: Yardstick,
    ctx: RunContext,
    utility_tolerance: float = verdict.UTILITY_TOLERANCE,
) -> tuple[dict[str, float], np.ndarray]:
    """Evaluate ``model`` like the references; the attack's columns, ``removal`` and the verdict are the verdict
    part's (`Yardstick.judge`), ``removal_select`` and ``objective`` the selection part's. ``poison_removed`` is 1
    only for the answer "removed" with utility kept; ``verdict_code`` codes the answer (`verdict.CODES`)."""
    attack = scenario.attack
    m, scores = evaluate_with_scores(model, scenario, ctx)
    m.update(yard.judge(attack, scores))
    m.update(yard.selection(attack, scores))
    kept = m["test_acc"] >= reference_metrics["poisoned"]["test_acc"] - utility_tolerance
    answer = verdict.decide(m["removal_pvalue"], m["equivalence_pvalue"], bool(m["attack_too_weak"]), kept)
    m["verdict_code"] = verdict.CODES[answer]
    m["poison_removed"] = float(answer == verdict.REMOVED)
    return m, scores


def unlearn(
    method: Method,
    cfg: Any,
    budget_fraction: float,
    scenario: Scenario,
    poisoned: nn.Module,
    reference_metrics: dict[str, dict[str, float]],
    yard: Yardstick,
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
        metrics, scores = judge(result.model, scenario, reference_metrics, yard, ctx, utility_tolerance)
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
            null = 0.0 if scenario.attack.residue.exact_null else ref["retrain"][name]
            out[f"removal_{part}"] = verdict.removal(ref["poisoned"][name], null, parts[name])
    return out
