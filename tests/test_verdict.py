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
