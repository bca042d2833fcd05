"""What the search benchmarks share: the embedded default's scenario at a seed, and one study of a method through the
real objective (`search.make_objective`, Optuna's median pruner as `tune` runs it, no MLflow)."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

import optuna
import torch

from unlearn_search import search
from unlearn_search.context import RunContext
from unlearn_search.methods import METHODS
from unlearn_search.scenario import Scenario, ScenarioConfig, build_scenario, evaluate, train_references
from unlearn_search.unlearning import Yardstick


class Quiet:
    """A trial reporter that reports nothing."""

    def started(self, trial: optuna.Trial, params: dict) -> None:
        pass

    def finished(self, trial: optuna.Trial, state: str, metrics: dict, reason: str) -> None:
        pass


def quiet() -> None:
    """Logs, warnings and Optuna's lines off; one thread (the machine's other core for whatever else runs)."""
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    torch.set_num_threads(1)


@dataclass
class Setting:
    """The embedded default at one seed: the scenario, its references and their metrics, the yardstick."""

    seed: int
    scenario: Scenario
    models: dict[str, Any]
    metrics: dict[str, dict[str, float]]
    yard: Yardstick
    ctx: RunContext


def setting(seed: int) -> Setting:
    cfg = ScenarioConfig(seed=seed)
    ctx = RunContext(seed=seed, device=torch.device("cpu"))
    sc = build_scenario(cfg, ctx)
    models = train_references(sc, ctx)
    metrics = {r: evaluate(m, sc, ctx) for r, m in models.items()}
    return Setting(seed, sc, models, metrics, Yardstick.of_models(sc, models, ctx), ctx)


def run_study(method: str, s: Setting, n_trials: int, sampler: optuna.samplers.BaseSampler | None = None,
              warm: list[dict] | None = None, callbacks: list | None = None) -> optuna.Study:
    """One study of ``method`` on ``s``: TPE as `tune` runs it unless ``sampler`` is given; ``warm`` settings are
    enqueued first (compare's warm start); ``callbacks`` as `optuna.Study.optimize` takes them (a stopping rule)."""
    study = optuna.create_study(direction="maximize",
                                sampler=sampler or search.TrialSeededSampler(s.seed, n_startup_trials=5),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1))
    for params in warm or []:
        study.enqueue_trial(dict(params), skip_if_exists=True)
    objective = search.make_objective(search.TuneConfig(method=method, seed=s.seed), METHODS.get(method), s.scenario,
                                      s.models["poisoned"], s.metrics, s.yard, s.ctx, Quiet())
    study.optimize(objective, n_trials=n_trials, catch=(Exception,), callbacks=callbacks or [])
    return study
