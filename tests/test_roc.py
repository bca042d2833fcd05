"""The fast ROC/AUC and normal tail give exactly scikit-learn's and SciPy's numbers (bit for bit, ties included)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from unlearn_search.metrics.roc import normal_sf, roc_auc, roc_curve


def _cases() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    cases = []
    for n_pos, n_neg in [(1, 1), (2, 3), (5, 1), (216, 216), (216, 360), (72, 1000), (3, 2000)]:
        cases.append((rng.normal(0.3, 1, n_pos), rng.normal(0, 1, n_neg)))
        # heavy ties: few distinct values (as accuracies or rounded losses give), shared across the classes
        cases.append((rng.integers(0, 5, n_pos) / 4, rng.integers(0, 5, n_neg) / 4))
        # float32-rounded losses near zero (the MIA's memorised points), negated as the MIA scores them
        cases.append((-np.float32(rng.exponential(1e-3, n_pos)).astype(np.float64),
                      -np.float32(rng.exponential(1e-1, n_neg)).astype(np.float64)))
    cases.append((np.zeros(10), np.zeros(10)))  # all tied
    cases.append((np.ones(4), np.zeros(4)))  # perfectly separated
    return cases


@pytest.mark.parametrize("case", range(len(_cases())))
def test_matches_sklearn_bit_for_bit(case: int) -> None:
    pos, neg = _cases()[case]
    labels = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    score = np.r_[pos, neg]
    fpr_sk, tpr_sk, _ = sk_roc_curve(labels, score)
    fpr, tpr = roc_curve(pos, neg)
    np.testing.assert_array_equal(fpr, fpr_sk)
    np.testing.assert_array_equal(tpr, tpr_sk)
    assert roc_auc(pos, neg) == float(roc_auc_score(labels, score))
    assert float(np.interp(0.01, fpr, tpr)) == float(np.interp(0.01, fpr_sk, tpr_sk))


def test_empty_class_is_nan_and_non_finite_is_an_error() -> None:
    assert math.isnan(roc_auc(np.array([]), np.array([1.0, 2.0])))
    assert math.isnan(roc_auc(np.array([1.0]), np.array([])))
    with pytest.raises(ValueError):
        roc_auc(np.array([1.0, np.nan]), np.array([0.0]))
    with pytest.raises(ValueError):
        roc_auc(np.array([1.0]), np.array([np.inf]))


def test_normal_sf_is_scipys() -> None:
    zs = [-40.0, -8.5, -1.0, -1e-9, 0.0, 0.05, 1.0, 1.6448536269514722, 5.69384023137194, 8.3, 37.0, 40.0,
          math.inf, -math.inf]
    zs += list(np.random.default_rng(1).normal(0, 3, 200))
    for z in zs:
        assert normal_sf(z) == float(stats.norm.sf(z)), z
    assert math.isnan(normal_sf(math.nan))
