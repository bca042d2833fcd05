"""Poison removal and the verdict (docs/paper.md section 5; docs/statistics.md), as pure functions.

The verdict is a statistical test with three answers, and it is built so that it cannot be fooled by the search:

1. **Select on one part, judge on the other.** The attack's units (the poisons for Gaussian poisoning; triggered
   test points or targets for success-count attacks) are split at random, seeded (`split_mask`). The search picks
   its best trial on the selection part only (`objective`); removal, the residual test and the equivalence test
   are computed on the verdict part only, so the best of many trials is not judged on the noise it was picked on.
2. **The residue** of a model is how far its per-unit evidence sits from what a model that never saw the poison
   gives (`Residue`): for GUS the exact N(0, 1) law of I_z (residue = mean I_z, two-sided: a mirrored poison,
   mean I_z < 0, is as impossible without the poison as a kept one); for success-count attacks the retrained
   model's successes (residue = mean successes above the retrained model's, one-sided: fewer successes than
   retraining is no residue).
3. **Three answers** (`decide`): "not removed" when the residual test rejects (two-sided exact z for GUS, Fisher
   exact for success counts; Holm-corrected across the methods of a comparison); "removed" only when equivalence
   is shown: the residue is within ± ``margin`` × the poisoned model's residue with 95% confidence (TOST,
   `equivalence`), i.e. at least 80% of the poison's signal gone at the default margin 0.2; "inconclusive"
   otherwise, with how many more units or seeds would decide it (`needed_factor`). Not rejecting is never read as
   removal.
4. **Seeds combine without cancelling** (`combined_pvalue`): for GUS p = min(1, 2 min(p_chi2, p_Stouffer)) with
   sum z^2 against chi-square on S degrees of freedom (sign-robust) and the two-sided Stouffer sum (power against
   one sign in every seed); equivalence over seeds pools the per-seed estimates by inverse variance and requires
   that the seeds agree (Cochran's Q).

The equivalence estimates use the retrained reference as a control variate where the null is exact (GUS): the
reference's I_z has mean exactly 0 and is strongly correlated with another model's I_z on the same poisons
(about 0.9 between two retrainings on the default), so the intercept of a regression of the model's I_z on the
reference's estimates the model's mean I_z without bias, with about 2.5 times less noise (`Residue.estimate`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def _stats() -> Any:
    """SciPy's statistics on first use: `attacks` imports this module, and benchmarks/gpu_check.py imports the
    attacks where SciPy is not installed."""
    from scipy import stats

    return stats


#: Significance level of every test of the verdict.
LEVEL = 0.05
#: Largest test-accuracy drop (absolute) from the poisoned model that still counts as "utility kept".
UTILITY_TOLERANCE = 0.02
#: Default equivalence margin, as a fraction of the poisoned model's residue: "removed" means at least 80% of the
#: poison's signal is gone, with 95% confidence.
EQUIVALENCE_MARGIN = 0.2
#: Default share of the units the search selects on (the rest is the verdict part). Chosen by measurement
#: (docs/statistics.md): the search needs far fewer units to rank trials than the equivalence test needs to decide.
SELECT_FRACTION = 0.3
#: The poisoned model must be detected on the verdict part at this one-sided level, else the attack is "too weak
#: to judge" and removal is NaN (a ratio to an undetected signal is noise).
WEAK_LEVEL = 0.01
#: Power the "inconclusive" answer's estimate of what would decide it aims at.
POWER = 0.8

REMOVED, INCONCLUSIVE, NOT_REMOVED, TOO_WEAK, UTILITY_LOST = (
    "removed", "inconclusive", "not removed", "attack too weak to judge", "utility lost")
#: Numeric codes of the answers (logged as the metric ``verdict_code``; NaN: too weak to judge).
CODES = {REMOVED: 1.0, INCONCLUSIVE: 0.0, NOT_REMOVED: -1.0, TOO_WEAK: math.nan, UTILITY_LOST: -2.0}


def check_fraction(name: str, value: float) -> None:
    """A margin or split fraction must lie in (0, 1): one-line `UsageError` otherwise."""
    from .errors import UsageError

    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise UsageError(f"{name}={value!r} is out of range; valid: a number in (0, 1)")


def split_mask(n_units: int, select_fraction: float, generator_seed: int) -> np.ndarray:
    """True for the units the search selects on, False for the verdict part: a seeded random subset of
    ``round(select_fraction * n_units)`` units (at least one in each part)."""
    check_fraction("select_fraction", select_fraction)
    rng = np.random.default_rng(np.random.SeedSequence([generator_seed, 0x5E1EC7]))
    k = min(max(1, round(select_fraction * n_units)), n_units - 1)
    mask = np.zeros(n_units, dtype=bool)
    mask[rng.permutation(n_units)[:k]] = True
    return mask


@dataclass(frozen=True)
class Estimate:
    """A residue estimated on one part: ``value`` ± ``se`` (with ``df`` degrees of freedom; inf = normal)."""

    value: float
    se: float
    df: float


@dataclass(frozen=True)
class Residue:
    """How an attack measures what is left of its poison, unit by unit.

    ``exact_null``: the null is exact and zero-mean per unit (GUS: the residue of a unit is its I_z), so the
    retrained reference's values serve as a control variate; otherwise the residue of a unit is its score minus the
    retrained model's. ``two_sided``: a residue of either sign is a residue (GUS); else only a positive one is."""

    exact_null: bool
    two_sided: bool

    def values(self, scores: np.ndarray, retrain: np.ndarray) -> np.ndarray:
        s = np.asarray(scores, float)
        return s if self.exact_null else s - np.asarray(retrain, float)

    def estimate(self, values: np.ndarray, retrain: np.ndarray) -> Estimate:
        """The mean residue: with an exact null, the intercept of the least-squares line of ``values`` on the
        reference's values (the control-variate estimate; unbiased because the reference's mean is exactly 0),
        else the plain mean."""
        v = np.asarray(values, float)
        n = len(v)
        if self.exact_null and n >= 4 and np.ptp(retrain) > 0:
            fit = _stats().linregress(np.asarray(retrain, float), v)
            return Estimate(float(fit.intercept), float(fit.intercept_stderr), float(n - 2))
        if n < 2:
            return Estimate(float(v.mean()) if n else math.nan, math.inf, 1.0)
        return Estimate(float(v.mean()), float(v.std(ddof=1) / math.sqrt(n)), float(n - 1))


GAUSSIAN_RESIDUE = Residue(exact_null=True, two_sided=True)
SUCCESS_RESIDUE = Residue(exact_null=False, two_sided=False)


def _one_sided_p(est: Estimate, below: bool) -> float:
    """p-value of "the true value is below 0" (``below``) or above 0, from a t (or normal) estimate."""
    if est.se == 0 or not math.isfinite(est.se):
        if est.se == 0:
            return 0.0 if (est.value < 0 if below else est.value > 0) else 1.0
        return 1.0
    t = est.value / est.se
    dist = _stats().norm if not math.isfinite(est.df) else _stats().t(est.df)
    return float(dist.cdf(t) if below else dist.sf(t))


@dataclass(frozen=True)
class Equivalence:
    """The TOST of |residue| < margin x poisoned residue on one part: its p-value (max of the sides'), and each
    side's estimate of residue - margin (``upper``, must be < 0) and residue + margin (``lower``, > 0; two-sided
    residues only)."""

    pvalue: float
    upper: Estimate
    lower: Estimate | None


def equivalence(residue: Residue, unlearned: np.ndarray, poisoned: np.ndarray, retrain: np.ndarray,
                margin: float) -> Equivalence:
    """Two one-sided tests (TOST) that the unlearned model's residue lies within ± ``margin`` × the poisoned
    model's, on the same units: per unit y = r_u - margin r_p (and r_u + margin r_p), whose mean is tested below
    (above) 0. The poisoned residue is estimated on the same units, so its own noise is accounted for."""
    r_u, r_p = residue.values(unlearned, retrain), residue.values(poisoned, retrain)
    upper = residue.estimate(r_u - margin * r_p, retrain)
    p = _one_sided_p(upper, below=True)
    lower = None
    if residue.two_sided:
        lower = residue.estimate(r_u + margin * r_p, retrain)
        p = max(p, _one_sided_p(lower, below=False))
    return Equivalence(p, upper, lower)


def removal(poisoned: float, null: float, unlearned: float) -> float:
    """(m_p - m_u) / (m_p - m_0) on an attack metric, anchored at ``null`` (0 for GUS's z-score: the exact null; the
    retrained model's value for success rates): 0 = the poisoned model, 1 = the null. NaN when m_p = m_0."""
    gap = poisoned - null
    if not math.isfinite(gap) or abs(gap) < 1e-12:
        return math.nan
    return (poisoned - unlearned) / gap


def removal_from(residue_unlearned: float, residue_poisoned: float) -> float:
    """1 - r_u / r_p (`removal` anchored at the null 0): 0 = the poisoned model's residue, 1 = the null (a model
    that never saw the poison); NaN when the poisoned residue is not positive."""
    if not math.isfinite(residue_poisoned) or residue_poisoned <= 0:
        return math.nan
    return removal(residue_poisoned, 0.0, residue_unlearned)


def objective(residue_unlearned: float, residue_poisoned: float) -> float:
    """What the search maximises on the selection part: closeness to the null, -|1 - removal| = -|r_u| / r_p
    (removal 1.0 beats an overshoot to 1.9 as much as it beats 0.1); -|r_u| when r_p is not positive."""
    if not math.isfinite(residue_unlearned):
        return math.nan
    scale = residue_poisoned if math.isfinite(residue_poisoned) and residue_poisoned > 0 else 1.0
    return -abs(residue_unlearned) / scale


def decide(residual_pvalue: float, equivalence_pvalue: float, too_weak: bool = False,
           utility_kept: bool = True, level: float = LEVEL) -> str:
    """The answer: too weak > utility lost > not removed (a detected residue, even one within the margin) >
    removed (equivalence shown) > inconclusive."""
    if too_weak:
        return TOO_WEAK
    if not utility_kept:
        return UTILITY_LOST
    if residual_pvalue < level:
        return NOT_REMOVED
    if equivalence_pvalue < level:
        return REMOVED
    return INCONCLUSIVE


def needed_factor(residue: float, se: float, margin: float, raw_residue: float, raw_se: float,
                  two_sided: bool = True, level: float = LEVEL, power: float = POWER) -> float:
    """About how many times the units (poisons in the verdict part, or seeds) an inconclusive answer would need to
    be decided at ``power``: whichever comes first of equivalence (if |residue| < margin) and rejection by the
    residual test, assuming the residue stays where it was estimated. inf when neither would ever decide."""
    z_b = _stats().norm.ppf(power)
    out = math.inf
    if math.isfinite(se) and se > 0 and abs(residue) < margin:
        out = ((_stats().norm.ppf(1 - level) + z_b) * se / (margin - abs(residue))) ** 2
    z_a = _stats().norm.ppf(1 - level / 2) if two_sided else _stats().norm.ppf(1 - level)
    if math.isfinite(raw_se) and raw_se > 0 and raw_residue != 0 and (two_sided or raw_residue > 0):
        out = min(out, ((z_a + z_b) * raw_se / abs(raw_residue)) ** 2)
    return max(out, 1.0) if math.isfinite(out) else math.inf


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN stays NaN and does not count as a test)."""
    p = np.asarray(pvalues, float)
    out = np.full(len(p), np.nan)
    idx = [i for i in np.argsort(p, kind="stable") if math.isfinite(p[i])]
    m, running = len(idx), 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


#: Ways to combine per-seed residual tests over seeds (`combined_pvalue`).
SEED_COMBINATIONS = ("chi2_stouffer", "fisher")
#: How tables name them.
COMBINATION_NAMES = {"chi2_stouffer": "χ²+Stouffer", "fisher": "Fisher's method"}


def combined_pvalue(values: Sequence[float], method: str) -> float:
    """One p-value for "the poison is still there" over independent seeds (each seed a full scenario).

    ``chi2_stouffer`` takes the seeds' z-scores (exactly N(0, 1) each without the poison): p = min(1, 2 min(p1,
    p2)) with p1 = P(chi2_S >= sum z^2), which no pattern of signs can cancel, and p2 the two-sided Stouffer p of
    sum z / sqrt(S), which keeps the power against a small residue of one sign in every seed; the factor 2 is the
    Bonferroni price of taking the smaller (the combined test's size stays <= 5%). ``fisher`` takes the seeds'
    one-sided p-values (discrete tests: Fisher exact): -2 sum log p against chi-square on 2S degrees of freedom.
    One seed: its own two-sided (resp. given) p-value.
    """
    if method not in SEED_COMBINATIONS:
        raise ValueError(f"unknown seed combination {method!r}; valid: {', '.join(SEED_COMBINATIONS)}")
    x = np.asarray(values, float)
    if len(x) == 0 or not np.isfinite(x).all():
        return math.nan
    if method == "fisher":
        p = np.clip(x, 1e-300, 1.0)
        return float(p[0]) if len(p) == 1 else float(_stats().combine_pvalues(p, method="fisher").pvalue)
    s = len(x)
    p_chi2 = float(_stats().chi2.sf(float(np.sum(x ** 2)), df=s))
    p_stouffer = float(2 * _stats().norm.sf(abs(float(np.sum(x))) / math.sqrt(s)))
    if s == 1:
        return p_stouffer  # = p_chi2 for one seed: the two-sided z-test
    return min(1.0, 2 * min(p_chi2, p_stouffer))


def pooled(estimates: Sequence[Estimate]) -> Estimate:
    """Inverse-variance (fixed-effect) pooling of per-seed estimates, normal reference."""
    ok = [e for e in estimates if math.isfinite(e.value) and math.isfinite(e.se) and e.se > 0]
    if len(ok) != len(estimates) or not ok:
        return Estimate(math.nan, math.nan, math.inf)
    if len(ok) == 1:
        return ok[0]
    w = np.array([1 / e.se ** 2 for e in ok])
    v = np.array([e.value for e in ok])
    return Estimate(float(np.sum(w * v) / np.sum(w)), float(1 / math.sqrt(np.sum(w))), math.inf)


def heterogeneity_pvalue(estimates: Sequence[Estimate]) -> float:
    """Cochran's Q test that the seeds' residues agree (1.0 for fewer than two seeds)."""
    if len(estimates) < 2:
        return 1.0
    mean = pooled(estimates)
    if not math.isfinite(mean.value):
        return math.nan
    q = sum(((e.value - mean.value) / e.se) ** 2 for e in estimates)
    return float(_stats().chi2.sf(q, df=len(estimates) - 1))


def combined_equivalence(uppers: Sequence[Estimate], lowers: Sequence[Estimate | None],
                         residues: Sequence[Estimate]) -> float:
    """TOST over seeds: each side's per-seed estimates pooled by inverse variance; seeds whose residues disagree
    (Cochran's Q rejects at `LEVEL`: a residue of one sign in one seed and the other sign in another can pool to
    zero) never show equivalence (p = 1)."""
    if heterogeneity_pvalue(residues) < LEVEL:
        return 1.0
    p = _one_sided_p(pooled(uppers), below=True)
    if lowers and all(e is not None for e in lowers):
        p = max(p, _one_sided_p(pooled([e for e in lowers if e is not None]), below=False))
    return p


def mean_ci(values: list[float] | np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student-t confidence interval of the mean over seeds (NaN bounds with fewer than two)."""
    x = np.asarray(values, float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    m = float(x.mean())
    if len(x) < 2:
        return m, float("nan"), float("nan")
    if np.ptp(x) == 0:  # every seed gave the same value: a zero-width interval
        return m, m, m
    lo, hi = _stats().t.interval(level, df=len(x) - 1, loc=m, scale=_stats().sem(x))
    return m, float(lo), float(hi)
