"""ROC curve and AUC of positives against negatives, bit for bit what scikit-learn computes, without its overhead.

`sklearn.metrics.roc_curve` / `roc_auc_score` validate and convert their inputs on every call (about 2-5 ms each,
several per trial through GUS, the MIA and the per-epoch removal used for pruning). These are the same operations
on the same float64 values in the same order (descending sort, a threshold per distinct score, cumulative true
positives, the collinear-point drop of ``drop_intermediate=True``, the trapezoidal rule), so the numbers are
identical; `tests/test_roc.py` checks that against scikit-learn, ties included. Like scikit-learn, a non-finite
score is an error; an empty class gives NaN.
"""

from __future__ import annotations

import numpy as np


def roc_curve(positives: np.ndarray, negatives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) of the scores ``positives`` (label 1) against ``negatives`` (label 0), larger = more positive,
    as `sklearn.metrics.roc_curve` returns them for ``y_true = [1]*len(positives) + [0]*len(negatives)``."""
    pos = np.asarray(positives, dtype=np.float64).ravel()
    neg = np.asarray(negatives, dtype=np.float64).ravel()
    score = np.concatenate([pos, neg])
    if not np.isfinite(score).all():
        raise ValueError("Input contains NaN or infinity (ROC of non-finite scores)")
    truth = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    # Descending order; how ties are ordered does not matter: only the cumulative counts at the last index of each
    # group of equal scores are used.
    order = np.argsort(score, kind="stable")[::-1]
    score, truth = score[order], truth[order]
    thresholds = np.concatenate([np.nonzero(np.diff(score))[0], [len(score) - 1]])
    tps = np.cumsum(truth, dtype=np.float64)[thresholds]
    fps = 1 + thresholds.astype(np.float64) - tps
    if len(fps) > 2:  # drop points collinear with their neighbours (scikit-learn's drop_intermediate=True)
        keep = np.where(np.concatenate([[True], np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), [True]]))[0]
        fps, tps = fps[keep], tps[keep]
    tps = np.concatenate([[0.0], tps])
    fps = np.concatenate([[0.0], fps])
    fpr = fps / fps[-1] if fps[-1] > 0 else np.full(fps.shape, np.nan)
    tpr = tps / tps[-1] if tps[-1] > 0 else np.full(tps.shape, np.nan)
    return fpr, tpr


def auc_of_curve(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Area under a curve from `roc_curve` (fpr never decreases), by the trapezoidal rule as `sklearn.metrics.auc`."""
    from scipy.integrate import trapezoid  # here, not at the top: the module imports without SciPy (gpu_check)

    return float(trapezoid(tpr, fpr))


def roc_auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """`sklearn.metrics.roc_auc_score` of positives against negatives; NaN if either is empty."""
    if len(positives) == 0 or len(negatives) == 0:
        return float("nan")
    return auc_of_curve(*roc_curve(positives, negatives))


def normal_sf(z: float) -> float:
    """P(N(0, 1) > z): what ``scipy.stats.norm.sf(z)`` returns (it is ``ndtr(-z)``), without its per-call argument
    handling."""
    from scipy.special import ndtr

    return float(ndtr(-z))
