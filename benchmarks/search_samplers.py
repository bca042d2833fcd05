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
import math
import time

import numpy as np
import optuna
from search_common import quiet, run_study, setting

from unlearn_search import search, verdict

SAMPLERS = {
    "tpe": lambda seed: search.TrialSeededSampler(seed, n_startup_trials=5),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
    "gp": lambda seed: optuna.samplers.GPSampler(seed=seed),
}


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
    quiet()
    checkpoints = [int(x) for x in a.checkpoints.split(",")]
    methods, samplers = a.methods.split(","), a.samplers.split(",")
    results: dict[tuple[str, str], list[list[tuple[float, float]]]] = {}
    t0 = time.perf_counter()
    for seed in range(a.seeds):
        s = setting(seed)
        for name in methods:
            for sampler in samplers:
                study = run_study(name, s, a.trials, sampler=SAMPLERS[sampler](seed))
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
