"""Poison removal and the verdict (PAPER.md section 5), as pure functions.

``removal`` puts the unlearned model on the line from the poisoned model (0) to the retrained one (1) on the
attack's metric. ``poison_removed`` is the verdict: the attack's one-sided test that the poison is still there
(`Attack.residual_pvalue`; for Gaussian poisoning, I_z against its exact N(0, 1) law for any model that never saw
the noise, which is the retrained model's law) does not reject at ``level``, *and* test accuracy stays within
``utility_tolerance`` of the poisoned model's.

Why not a paired test against the one retrained model for GUS: two independently retrained models have strongly
correlated I_z on the same poisons (similar input gradients), so a paired test detects the small difference
between two *retrainings* (seen: p = 0.013 for a complete retraining judged against the reference); the N(0, 1)
null has an exact 5% false-positive rate for any model that never saw the noise.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

#: Significance level of the verdict's test (README: "Verdict").
LEVEL = 0.05
#: Largest test-accuracy drop (absolute) from the poisoned model that still counts as "utility kept".
UTILITY_TOLERANCE = 0.02


def has_effect(poisoned: float, retrain: float) -> bool:
    """Whether the poisons changed the attack's metric at all (else removal is undefined: nothing to unlearn)."""
    gap = poisoned - retrain
    return math.isfinite(gap) and abs(gap) >= 1e-12


def removal(poisoned: float, retrain: float, unlearned: float) -> float:
    """(m_p - m_u) / (m_p - m_r): 0 = no change from the poisoned model, 1 = as good as retraining."""
    if not has_effect(poisoned, retrain):
        return float("nan")
    return (poisoned - unlearned) / (poisoned - retrain)


def paired_pvalue(scores_unlearned: np.ndarray, scores_retrain: np.ndarray) -> float:
    """One-sided paired t-test p-value for 'unlearned scores exceed retrained scores' (same poisons, same order)."""
    u, r = np.asarray(scores_unlearned, float), np.asarray(scores_retrain, float)
    if u.shape != r.shape or len(u) < 2:
        raise ValueError("paired scores of equal length >= 2 expected")
    d = u - r
    if np.allclose(d, d[0]):  # no variance: the models agree exactly (or differ by a constant)
        return 1.0 if d[0] <= 0 else 0.0
    return float(stats.ttest_rel(u, r, alternative="greater").pvalue)


def undetected(pvalue: float, min_pvalue: float, metric_unlearned: float, metric_retrain: float) -> bool:
    """Whether the poison is no longer detected. A residual test whose smallest attainable p-value is not below
    `LEVEL` (e.g. Fisher's test on a single target: 0.5) can never reject and says nothing; then the poison counts
    as gone only if the attack's metric is back at (or below) the retrained model's value."""
    if min_pvalue < LEVEL:
        return pvalue >= LEVEL
    return metric_unlearned <= metric_retrain + 1e-12


def poison_removed(
    undetected: bool,
    test_acc_unlearned: float,
    test_acc_poisoned: float,
    utility_tolerance: float = UTILITY_TOLERANCE,
) -> bool:
    """Removed: the residual test no longer detects the poison (``undetected``: p >= `LEVEL`, or, where the test
    has too few units to ever reject, the attack's metric is back at the retrained value) and utility is kept."""
    return bool(undetected) and test_acc_unlearned >= test_acc_poisoned - utility_tolerance


#: Ways to combine per-seed one-sided p-values (`combined_pvalue`), named as `scipy.stats.combine_pvalues` names them.
SEED_COMBINATIONS = ("stouffer", "fisher")
#: How tables name them.
COMBINATION_NAMES = {"stouffer": "Stouffer's z", "fisher": "Fisher's method"}


def combined_pvalue(pvalues: np.ndarray | list[float], method: str) -> float:
    """One p-value for "the poison is still there" over independent seeds (each seed a full scenario: its own
    poisons, noise, references and search).

    ``stouffer``: Z = sum(Phi^-1(1 - p_s)) / sqrt(N). For GUS Phi^-1(1 - p_s) is the seed's ``gus_z``, exactly
    N(0, 1) for a model that never saw the noise, so Z is exactly N(0, 1) under "removed in every seed": the combined
    test keeps its 5% false-positive rate, and a consistent moderate residue in every seed adds up (which a vote over
    seeds would miss). ``fisher``: -2 sum(log p_s) against chi-square with 2N degrees of freedom, for discrete tests
    (Fisher exact), whose p = 1 would become a spurious large negative z under Stouffer. One seed: its own p-value.
    """
    if method not in SEED_COMBINATIONS:
        raise ValueError(f"unknown seed combination {method!r}; valid: {', '.join(SEED_COMBINATIONS)}")
    p = np.clip(np.asarray(pvalues, float), 1e-300, 1.0)
    if method == "stouffer":
        p = np.minimum(p, 1.0 - 1e-16)  # Phi^-1(0) = -inf; a p of exactly 1 only arises from rounding here
    if len(p) == 0:
        return float("nan")
    if len(p) == 1:
        return float(p[0])
    return float(stats.combine_pvalues(p, method=method).pvalue)


def seeds_verdict(
    pvalues: list[float],
    min_pvalues: list[float],
    undetected_per_seed: list[bool],
    method: str,
) -> tuple[float, bool]:
    """(combined p-value, removed over all seeds): removed when the combined test does not reject at `LEVEL`.

    As for one seed (`undetected`), a combination that could not reject even at every seed's smallest attainable
    p-value says nothing; then "removed" needs the poison undetected in every seed. Seeds are the method's best
    feasible trial in each seed, so utility is kept in each by construction.
    """
    p = combined_pvalue(pvalues, method)
    if combined_pvalue(min_pvalues, method) < LEVEL:
        return p, bool(p >= LEVEL)
    return p, all(undetected_per_seed)


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
    lo, hi = stats.t.interval(level, df=len(x) - 1, loc=m, scale=stats.sem(x))
    return m, float(lo), float(hi)
