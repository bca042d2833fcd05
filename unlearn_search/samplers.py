"""Optuna samplers as a study uses them: TPE (the default) or another of `SAMPLERS`, each trial's randomness seeded
from the study's seed and the trial's number (`TrialSeededSampler`), so that resumed and shared studies never draw
a parameter set twice."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna

#: The samplers a study may use (``--sampler``): TPE is the default, the winner of benchmarks/search_samplers.py
#: (docs/benchmarks.md, "The samplers and the search depth"); random search and Optuna's Gaussian-process sampler for
#: comparison.
SAMPLERS = ("tpe", "random", "gp")


def _make_sampler(kind: str, seed: int, **kwargs: Any) -> optuna.samplers.BaseSampler:
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "gp":
        return optuna.samplers.GPSampler(seed=seed, **kwargs)
    return optuna.samplers.TPESampler(seed=seed, **kwargs)


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """Optuna's TPE sampler (or another of `SAMPLERS`), with the randomness of trial number n seeded from (study
    seed, n).

    A sampler seeded once per process re-draws the same random stream whenever a study is resumed, and every
    worker started with the same seed draws what the others draw: resumed and shared studies repeated trials. Here
    each trial gets a fresh `optuna.samplers.TPESampler` whose seed is derived from the study's seed and the trial's
    number, which the storage hands out uniquely to all workers of a study. So no two trials of a study share a
    random stream (resumed or concurrent, no parameter set is drawn twice), and because TPE is a function of the
    finished trials and its seed, a study run in several pieces (resumed) draws exactly what the uninterrupted study
    draws. With several concurrent workers the trials each one sees finished depend on timing, so their study is
    reproducible only up to that interleaving.
    """

    def __init__(self, seed: int, kind: str = "tpe", **tpe_kwargs: Any) -> None:
        self.seed, self.kind, self.tpe_kwargs = seed, kind, tpe_kwargs
        self._per_trial: dict[int, optuna.samplers.BaseSampler] = {}

    def trial_seed(self, number: int) -> int:
        return int(np.random.SeedSequence([self.seed, number]).generate_state(1)[0])

    def _tpe(self, trial: optuna.trial.FrozenTrial) -> optuna.samplers.BaseSampler:
        tpe = self._per_trial.get(trial.number)
        if tpe is None:
            tpe = self._per_trial[trial.number] = _make_sampler(
                self.kind, self.trial_seed(trial.number), **({} if self.kind == "random" else self.tpe_kwargs))
        return tpe

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self._tpe(trial).before_trial(study, trial)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: optuna.trial.FrozenTrial
    ) -> dict[str, optuna.distributions.BaseDistribution]:
        return self._tpe(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                        search_space: dict[str, optuna.distributions.BaseDistribution]) -> dict[str, Any]:
        return self._tpe(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, param_name: str,
                           param_distribution: optuna.distributions.BaseDistribution) -> Any:
        return self._tpe(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                    state: optuna.trial.TrialState, values: Sequence[float] | None) -> None:
        tpe = self._per_trial.pop(trial.number, None)
        if tpe is not None:
            tpe.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:  # the per-trial seeds are the point: nothing to reseed
        pass
