"""Which sampler finds the best case, and how deep must the search go? (issue 26: "prove the sampler", "search
depth").

On the embedded default, for each method, sampler and scenario seed, one study of ``--trials`` trials through the
real objective (`search.make_objective`: closeness to retraining on the selection part, the utility constraint,
pruning), no MLflow; the best feasible objective after n trials is read off the same study for each n of
``--checkpoints`` (a sequential sampler's first n trials are what an n-trial study draws). Samplers: TPE as `tune`
runs it (`search.TrialSeededSampler`), random search, and Optuna's Gaussian-process sampler. Prints, per method,
sampler and n, the best objective (mean over seeds with its 95% t-interval) and the verdict-part removal of that
best trial (mean over seeds):

    python benchmarks/search_samplers.py --methods gd,scrub,ssd --seeds 3 --trials 100 --checkpoints 20,50,100
"""

from __future__ import annotations

import argparse
import logging
import math
import time
import warnings

import numpy as np
import optuna
import torch

from unlearn_search import search, verdict
from unlearn_search.context import RunContext
from unlearn_search.methods import METHODS
from unlearn_search.scenario import ScenarioConfig, build_scenario, evaluate, train_references
from unlearn_search.unlearning import Yardstick

SAMPLERS = {
    "tpe": lambda seed: search.TrialSeededSampler(seed, n_startup_trials=5),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
    "gp": lambda seed: optuna.samplers.GPSampler(seed=seed),
}


class _Quiet:
    def started(self, trial: optuna.Trial, params: dict) -> None:
        pass

    def finished(self, trial: optuna.Trial, state: str, metrics: dict, reason: str) -> None:
        pass


def best_curve(study: optuna.Study, checkpoints: list[int]) -> list[tuple[float, float]]:
    """(best objective, its trial's verdict-part removal) among the feasible trials of the first n, per n."""
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    out = []
    for n in checkpoints:
        feas = [t for t in trials[:n] if t.state == optuna.trial.TrialState.COMPLETE and search.is_feasible(t)]
        if not feas:
            out.append((math.nan, math.nan))
            continue
        best = max(feas, key=lambda t: t.values[0])
        out.append((best.values[0], best.user_attrs["metrics"]["removal"]))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="gd,scrub,ssd")
    p.add_argument("--samplers", default="tpe,random,gp")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--checkpoints", default="20,50,100")
    a = p.parse_args()
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    torch.set_num_threads(1)
    checkpoints = [int(x) for x in a.checkpoints.split(",")]
    methods, samplers = a.methods.split(","), a.samplers.split(",")
    results: dict[tuple[str, str], list[list[tuple[float, float]]]] = {}
    t0 = time.perf_counter()
    for seed in range(a.seeds):
        cfg = ScenarioConfig(seed=seed)
        ctx = RunContext(seed=seed, device=torch.device("cpu"))
        sc = build_scenario(cfg, ctx)
        models = train_references(sc, ctx)
        metrics = {r: evaluate(m, sc, ctx) for r, m in models.items()}
        for name in methods:
            tc = search.TuneConfig(method=name, seed=seed)
            yard = Yardstick.of_models(sc, models, ctx)
            for sampler in samplers:
                study = optuna.create_study(direction="maximize", sampler=SAMPLERS[sampler](seed),
                                            pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1))
                objective = search.make_objective(tc, METHODS.get(name), sc, models["poisoned"], metrics, yard, ctx,
                                                  _Quiet())
                study.optimize(objective, n_trials=a.trials, catch=(Exception,))
                results.setdefault((name, sampler), []).append(best_curve(study, checkpoints))
                print(f"seed {seed} {name} {sampler}: {a.trials} trials, {time.perf_counter() - t0:.0f} s so far",
                      flush=True)
    print("\n| method | sampler | " + " | ".join(f"best objective after {n} (removal)" for n in checkpoints) + " |")
    print("|---|---|" + "---|" * len(checkpoints))
    for (name, sampler), per_seed in results.items():
        cells = []
        for j in range(len(checkpoints)):
            obj = [s[j][0] for s in per_seed]
            rem = [s[j][1] for s in per_seed]
            m, lo, hi = verdict.mean_ci(obj)
            cells.append(f"{m:.3f} [{lo:.3f}, {hi:.3f}] ({np.nanmean(rem):.2f})")
        print(f"| {name} | {sampler} | " + " | ".join(cells) + " |")
    print(f"\n{a.seeds} seeds; objective = -|1 - removal| on the selection part (0 = retraining); removal: the best "
          f"trial's on the verdict part, mean over seeds; {time.perf_counter() - t0:.0f} s in all")


if __name__ == "__main__":
    main()
