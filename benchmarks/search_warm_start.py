"""Does learning across seeds help? The best case after n trials with and without `compare`'s warm start (issue 26:
"learn across seeds").

On the embedded default, for each method: seed 0's study runs ``--trials`` trials; then seeds 1..``--seeds``-1 each
run two studies of ``--trials`` trials through the real objective (`search.make_objective`, TPE as `tune` runs it,
no MLflow): one cold, one that first tries the best settings of the method's earlier seeds (`compare`'s warm start:
``study.enqueue_trial``, settings only; each seed keeps its own poisons and references). Prints, per method and n,
the best objective over the warm-started seeds (mean, cold against warm) and the share of (seed) studies where warm
is at least as good:

    python benchmarks/search_warm_start.py --methods gd,ngd,ga,eu_k,cf_k,scrub,neggrad_plus,ssd --seeds 3 \\
        --trials 50 --checkpoints 1,5,10,20,50
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np


def main() -> None:
    import optuna
    from search_common import quiet, run_study, setting

    from unlearn_search import search
    from unlearn_search.stopping import StopRule

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="gd,ngd,ga,eu_k,cf_k,scrub,neggrad_plus,ssd")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--trials", type=int, default=50)
    p.add_argument("--checkpoints", default="1,5,10,20,50")
    p.add_argument("--settled", action="store_true",
                   help="as compare runs it: every study stops by the default rule (stop=settled, --trials the cap), "
                        "and the warm chain enqueues the earlier seeds' warm bests; prints the best case at the stop")
    a = p.parse_args()
    quiet()
    checkpoints = [int(x) for x in a.checkpoints.split(",")]
    methods = a.methods.split(",")
    t0 = time.perf_counter()
    settings = [setting(seed) for seed in range(a.seeds)]
    print(f"{a.seeds} scenarios in {time.perf_counter() - t0:.0f} s", flush=True)
    rule = StopRule("settled")

    def study_of(name: str, seed: int, warm: list[dict]) -> optuna.Study:
        stop = [rule.callback(lambda st: search.objective_history(st.get_trials(deepcopy=False)))] if a.settled else []
        return run_study(name, settings[seed], a.trials, warm=warm, callbacks=stop)

    def best_after(study: optuna.Study, n: int) -> float:
        h = search.objective_history(study.get_trials(deepcopy=False))[:n]
        return float(np.nanmax(h)) if np.isfinite(h).any() else math.nan

    if a.settled:
        settled_chains(methods, a.seeds, study_of)
        print(f"\n{time.perf_counter() - t0:.0f} s in all")
        return
    print("\n| method | " + " | ".join(f"after {n}: cold / warm" for n in checkpoints) + " | warm >= cold |")
    print("|---|" + "---|" * (len(checkpoints) + 1))
    for name in methods:
        bests: list[dict] = []
        cold_rows, warm_rows = [], []
        for seed in range(a.seeds):
            if seed:
                cold, warm = study_of(name, seed, []), study_of(name, seed, bests)
                cold_rows.append([best_after(cold, n) for n in checkpoints])
                warm_rows.append([best_after(warm, n) for n in checkpoints])
                own = cold
            else:
                own = study_of(name, seed, [])
            best = search.best_trial(own)
            if best is not None:
                bests.append(dict(best.params))
        c, w = np.array(cold_rows, float), np.array(warm_rows, float)
        cells = [f"{np.nanmean(c[:, j]):.3f} / {np.nanmean(w[:, j]):.3f}" for j in range(len(checkpoints))]
        ok = np.nan_to_num(w, nan=-9) >= np.nan_to_num(c, nan=-9)
        print(f"| {name} | " + " | ".join(cells) + f" | {int(ok.sum())} of {ok.size} |", flush=True)
    print(f"\nobjective = -|1 - removal| on the selection part (0 = retraining), mean over seeds 1-{a.seeds - 1} "
          f"(seed 0 has no earlier seed); the warm study's first trials are the earlier seeds' best settings (from "
          f"their cold {a.trials}-trial studies); {time.perf_counter() - t0:.0f} s in all")


def settled_chains(methods: list[str], seeds: int, study_of) -> None:  # type: ignore[no-untyped-def]
    """Each method's seeds as `compare` runs them, cold and warm: per seed, the best case at the settled stop (the
    best feasible objective on the selection part, its trial's verdict-part removal) and the trials used."""
    from unlearn_search import search

    print("\n| method | seed | cold: objective, removal, trials | warm: objective, removal, trials |")
    print("|---|---|---|---|")
    totals: dict[str, list[list[float]]] = {"cold": [], "warm": []}
    for name in methods:
        bests: dict[str, list[dict]] = {"cold": [], "warm": []}
        for seed in range(seeds):
            cells = []
            for chain in ("cold", "warm"):
                study = study_of(name, seed, bests["warm"] if chain == "warm" else [])
                best = search.best_trial(study)
                n = len(search.objective_history(study.get_trials(deepcopy=False)))
                if best is None:
                    cells.append(f"none, {n}")
                    totals[chain].append([math.nan, math.nan, n])
                    continue
                bests[chain].append(dict(best.params))
                m = best.user_attrs["metrics"]
                cells.append(f"{m['objective']:.3f}, {m['removal']:.2f}, {n}")
                totals[chain].append([m["objective"], m["removal"], n])
            print(f"| {name} | {seed} | {cells[0]} | {cells[1]} |", flush=True)
    for chain, rows in totals.items():
        r = np.array(rows, float)
        print(f"{chain}: mean objective {np.nanmean(r[:, 0]):.3f}, mean verdict-part removal "
              f"{np.nanmean(r[:, 1]):.3f}, {int(r[:, 2].sum())} trials in all")


if __name__ == "__main__":
    main()
