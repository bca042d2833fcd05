"""Removal and the verdict's tests against hand computations and their nulls."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from unlearn_search import verdict
from unlearn_search.attacks import ATTACKS


def _attack(name):
    cls = ATTACKS.get(name)
    return cls(cls.config_from({}))


def test_removal_by_hand():
    assert verdict.removal(6.0, 1.0, 6.0) == 0.0
    assert verdict.removal(6.0, 1.0, 1.0) == 1.0
    assert verdict.removal(6.0, 1.0, 3.5) == pytest.approx(0.5)
    assert verdict.removal(0.9, 0.97, 0.95) == pytest.approx((0.9 - 0.95) / (0.9 - 0.97))  # accuracy-type metric
    assert math.isnan(verdict.removal(1.0, 1.0, 0.5))


def test_gaussian_residual_test_is_the_exact_null_and_calibrated():
    g = _attack("gaussian")
    iz = np.array([0.5, 1.0, -0.2, 0.3])
    assert g.residual_pvalue(iz, np.zeros(4)) == pytest.approx(stats.norm.sf(iz.mean() * 2))
    # a model that never saw the noise has I_z ~ N(0, 1): rejections at 5% happen about 5% of the time
    rng = np.random.default_rng(0)
    p = np.array([g.residual_pvalue(rng.standard_normal(200), None) for _ in range(2000)])
    assert 0.035 < (p < 0.05).mean() < 0.065
    assert g.residual_pvalue(rng.standard_normal(200) + 0.5, None) < 1e-6  # a poisoned model is detected


def test_backdoor_residual_test_is_fisher_exact():
    b = _attack("backdoor")
    u, r = np.array([1.0] * 8 + [0.0] * 92), np.array([1.0] * 1 + [0.0] * 99)
    expected = stats.fisher_exact([[8, 92], [1, 99]], alternative="greater").pvalue
    assert b.residual_pvalue(u, r) == pytest.approx(expected)
    assert b.residual_pvalue(r, r) > 0.5  # equal success counts: nothing to detect


def test_paired_fallback_by_hand():
    u, r = np.array([1.0, 2.0, 3.0, 4.5]), np.array([0.5, 2.0, 2.0, 4.0])
    assert verdict.paired_pvalue(u, r) == pytest.approx(stats.ttest_rel(u, r, alternative="greater").pvalue)
    assert verdict.paired_pvalue(r, r) == 1.0


def test_utility_gate():
    assert verdict.poison_removed(True, 0.96, 0.97)
    assert not verdict.poison_removed(True, 0.94, 0.97)
    assert not verdict.poison_removed(False, 0.97, 0.97)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 10])
def test_fisher_smallest_pvalue_is_attained_and_exact(n):
    """1 / C(2n, n) is what scipy's Fisher test gives at n successes against none (the most extreme table)."""
    b = ATTACKS.get("witches_brew")(ATTACKS.get("witches_brew").config_from({}))
    assert b.residual_min_pvalue(n) == pytest.approx(b.residual_pvalue(np.ones(n), np.zeros(n)))
    assert (b.residual_min_pvalue(n) < verdict.LEVEL) == (n >= 4)


def test_an_untestable_verdict_falls_back_to_the_metric():
    # one target still flipped: Fisher p = 0.5 would read "not detected", but the test could never reject
    assert not verdict.undetected(0.5, min_pvalue=0.5, metric_unlearned=1.0, metric_retrain=0.0)
    assert verdict.undetected(1.0, min_pvalue=0.5, metric_unlearned=0.0, metric_retrain=0.0)
    # a test with power decides by its p-value alone
    assert verdict.undetected(0.2, min_pvalue=0.0, metric_unlearned=1.0, metric_retrain=0.0)
    assert not verdict.undetected(0.01, min_pvalue=0.0, metric_unlearned=0.0, metric_retrain=0.0)


# --- the verdict over seeds -------------------------------------------------------------------------------------


def test_stouffer_and_fisher_combinations_by_hand():
    z = np.array([1.2, 0.3, 2.0])
    p = stats.norm.sf(z)
    assert verdict.combined_pvalue(p, "stouffer") == pytest.approx(stats.norm.sf(z.sum() / math.sqrt(3)))
    assert verdict.combined_pvalue(p, "fisher") == pytest.approx(stats.chi2.sf(-2 * np.log(p).sum(), df=6))
    assert verdict.combined_pvalue([0.3], "stouffer") == 0.3  # one seed: its own test
    # a discrete test's p = 1 adds nothing under Fisher's method; under Stouffer it would cancel strong evidence
    assert verdict.combined_pvalue([1e-10, 1.0, 1.0], "fisher") < 0.05
    assert verdict.combined_pvalue([1e-10, 1.0, 1.0], "stouffer") > 0.05
    with pytest.raises(ValueError, match="valid: stouffer, fisher"):
        verdict.combined_pvalue(p, "vote")


def test_a_moderate_residue_in_every_seed_adds_up():
    """z = 1.2 in each of three seeds: no seed alone rejects (p = 0.115 each), a vote would say 'removed in 3 of 3',
    but the combined z = 2.08 detects the poison."""
    p = [float(stats.norm.sf(1.2))] * 3
    combined, removed = verdict.seeds_verdict(p, [0.0] * 3, [True] * 3, "stouffer")
    assert combined == pytest.approx(stats.norm.sf(3.6 / math.sqrt(3))) and combined < 0.05 and not removed


@pytest.mark.parametrize("n_seeds", [3, 8])
def test_combined_gus_verdict_has_its_nominal_false_positive_rate(n_seeds):
    """Models that never saw the noise (I_z ~ N(0, 1) in every seed): the combined test rejects about 5% of the time,
    as the single-seed test does."""
    g = _attack("gaussian")
    rng = np.random.default_rng(1)
    rejections = []
    for _ in range(2000):
        p = [g.residual_pvalue(rng.standard_normal(200), None) for _ in range(n_seeds)]
        rejections.append(verdict.combined_pvalue(p, g.seed_combination) < verdict.LEVEL)
    assert 0.035 < np.mean(rejections) < 0.065
    # and a poison that is still there, weakly, in every seed is detected far more often than that
    weak = [verdict.combined_pvalue([g.residual_pvalue(rng.standard_normal(200) + 0.08, None)
                                     for _ in range(n_seeds)], g.seed_combination) < verdict.LEVEL
            for _ in range(300)]
    assert np.mean(weak) > 0.4


def test_combined_fisher_verdict_never_exceeds_its_level():
    """Success counts of two models that both never saw the poison (same success rate): Fisher's exact test is
    discrete, so the combined test is conservative: at most 5% false positives."""
    b = _attack("backdoor")
    rng = np.random.default_rng(2)
    rejections = []
    for _ in range(2000):
        p = [b.residual_pvalue(rng.random(60) < 0.1, rng.random(60) < 0.1) for _ in range(3)]
        rejections.append(verdict.combined_pvalue(p, b.seed_combination) < verdict.LEVEL)
    assert np.mean(rejections) <= 0.055


def test_an_untestable_combination_falls_back_to_every_seed():
    """Witches' Brew with one target per seed: each seed's Fisher p is at least 0.5 and their combination can never
    reject, so 'removed' needs the target un-flipped in every seed."""
    mins = [0.5, 0.5, 0.5]
    assert verdict.seeds_verdict([0.5, 1.0, 1.0], mins, [False, True, True], "fisher") == (
        pytest.approx(verdict.combined_pvalue([0.5, 1.0, 1.0], "fisher")), False)
    assert verdict.seeds_verdict([1.0, 1.0, 1.0], mins, [True, True, True], "fisher")[1]


def test_mean_ci_is_the_student_t_interval():
    x = [0.2, 0.5, 0.9]
    m, lo, hi = verdict.mean_ci(x)
    half = stats.t.ppf(0.975, df=2) * np.std(x, ddof=1) / math.sqrt(3)
    assert m == pytest.approx(np.mean(x)) and (lo, hi) == (pytest.approx(m - half), pytest.approx(m + half))
    assert verdict.mean_ci([0.4, 0.4]) == (0.4, 0.4, 0.4)
    assert all(math.isnan(v) for v in verdict.mean_ci([0.4])[1:])
