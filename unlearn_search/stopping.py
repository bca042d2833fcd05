"""When a search has settled: the stopping rule of a study (``stop=settled``), and Optuna's hook that applies it.

A failure this tool reports is meant to be a best-case failure, so a study should run until its best case stops
moving, not to a fixed count. The rule is a patience rule on the best case itself (the running maximum of the
feasible trials' objective, closeness to retraining on the selection part, `tune.objective_history`): the study
has **settled** after ``n`` finished trials when ``n >= min_trials`` and the best case among the first ``n`` is no
more than ``tolerance`` above the best case among the first ``n - patience``. Otherwise it runs on to the cap
(``n_trials``) and is reported "capped at N, still improving". It is the rule of Optuna's own
``optuna.terminator.BestValueStagnationEvaluator`` (trials since the best value), with two differences that this
search needs: it counts every finished trial, pruned ones too (most trials of a study are pruned; the evaluator
counts complete ones only), and its best value is the best *feasible* one (a trial that lost utility is no best
case; the evaluator reads ``study.best_value``, blind to the constraint). Why patience and not Optuna's
regret-bound terminator, and how much of a 200-trial best case the default captures: docs/tune.md, measured by
``benchmarks/search_stopping.py``.

The callback (`SettledCallback`) calls ``study.stop()``: every worker of a shared study evaluates the same rule on
the same trials, so all of them stop; no scheduler of our own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import UsageError, check_choice, check_range

STOPS = ("settled", "fixed")
#: The default rule (docs/tune.md, "When a search stops"): at least 20 finished trials; settled when the last 30
#: finished trials raised the best case by at most 0.01 (closeness is minus the distance of removal from 1: 0.01 is
#: one hundredth of the way from the poisoned model to retraining).
MIN_TRIALS = 20
PATIENCE = 30
TOLERANCE = 0.01


@dataclass(frozen=True)
class StopRule:
    """``stop``: ``settled`` (the patience rule, capped at ``n_trials``) or ``fixed`` (exactly ``n_trials``)."""

    stop: str = "settled"
    min_trials: int = MIN_TRIALS
    patience: int = PATIENCE
    tolerance: float = TOLERANCE

    def __post_init__(self) -> None:
        check_choice("stop", self.stop, STOPS)
        check_range("min_trials", self.min_trials, low=1)
        check_range("patience", self.patience, low=1)
        check_range("tolerance", self.tolerance, low=0)

    def check_cap(self, n_trials: int) -> None:
        """A cap below the minimum cannot settle: one line naming both."""
        check_range("n_trials", n_trials, low=1)
        if self.stop == "settled" and n_trials < self.min_trials:
            raise UsageError(f"min_trials={self.min_trials} is above the cap n_trials={n_trials}; valid: min_trials "
                             f"<= n_trials (or stop=fixed)")

    def settled_at(self, history: Sequence[float]) -> int | None:
        """The number of finished trials after which the rule first holds on ``history`` (each finished trial's
        objective in trial order, NaN where it has no feasible value), or None if it never does."""
        if self.stop != "settled":
            return None
        best = _running_best(history)
        for n in range(max(self.min_trials, self.patience + 1), len(best) + 1):
            now, before = best[n - 1], best[n - 1 - self.patience]
            if math.isfinite(now) and math.isfinite(before) and now - before <= self.tolerance:
                return n
        return None

    def describe(self, history: Sequence[float], cap: int) -> tuple[str, str]:
        """(state, reason) of a study that has run ``history``: ``settled`` after N, ``capped`` (the cap reached
        while still improving), ``running`` (neither yet), or ``fixed`` (stop=fixed: it ran the count asked)."""
        n = len(history)
        if self.stop == "fixed":
            return "fixed", f"stop=fixed: {n} trials, as asked"
        at = self.settled_at(history)
        if at is not None:
            best = _running_best(history)
            return "settled", (f"settled after {at} trials: the best case moved by "
                               f"{best[at - 1] - best[at - 1 - self.patience]:.3g} (<= {self.tolerance:g}) in the "
                               f"last {self.patience}")
        if n >= cap:
            if not np.isfinite(np.asarray(history, float)).any():
                return "capped", f"capped at {cap} trials without a feasible trial: no best case to settle"
            return "capped", (f"capped at {cap} trials, still improving: the best case moved by more than "
                              f"{self.tolerance:g} in the last {self.patience}")
        return "running", f"{n} of at most {cap} trials, not settled yet"

    def callback(self, history_of: Callable[[Any], Sequence[float]]) -> Callable[[Any, Any], None]:
        """An Optuna callback that stops the study once the rule holds (``history_of(study)`` reads its history)."""

        def settled_callback(study: Any, trial: Any) -> None:
            if self.settled_at(history_of(study)) is not None:
                study.stop()

        return settled_callback


def _running_best(history: Sequence[float]) -> np.ndarray:
    """The running maximum of ``history``, ignoring NaN (NaN until the first finite value)."""
    v = np.asarray(history, float)
    out = np.fmax.accumulate(np.where(np.isfinite(v), v, -np.inf)) if len(v) else v
    return np.where(np.isfinite(out), out, np.nan)
