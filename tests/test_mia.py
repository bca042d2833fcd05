"""Loss-based MIA against hand-computed truths."""

from __future__ import annotations

import numpy as np
import pytest

from unlearn_search.metrics import loss_mia


def test_perfect_separation():
    r = loss_mia(np.array([0.1, 0.2, 0.3]), np.array([1.0, 2.0, 3.0]))
    assert r["mia_auc"] == 1.0
    assert r["mia_tpr_at_1fpr"] == 1.0


def test_identical_distributions_are_chance():
    rng = np.random.default_rng(0)
    r = loss_mia(rng.exponential(size=4000), rng.exponential(size=4000))
    assert r["mia_auc"] == pytest.approx(0.5, abs=0.03)
    assert r["mia_tpr_at_1fpr"] == pytest.approx(0.01, abs=0.01)


def test_members_with_higher_loss_give_auc_below_half():
    r = loss_mia(np.array([5.0, 6.0]), np.array([1.0, 2.0]))
    assert r["mia_auc"] == 0.0
