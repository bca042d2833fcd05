"""How much of a deep search's best case does a stopping rule capture, and after how many trials? (issue 26: "stop
when settled", "search depth").

On the embedded default, for each method and scenario seed, one study of ``--cap`` trials through the real
objective (`search.make_objective`, TPE as `tune` runs it, no MLflow). A sequential study's first n trials are what a
study stopped after n would have run, so every stopping rule is evaluated on the same studies, offline
(`stopping.StopRule.settled_at` on the study's objective history). Prints, per rule, over all (method, seed): the
median and largest number of trials it stops after, how many studies it left at the cap, and how much of the
best case of the full ``--cap`` trials it captured: the gap in objective (closeness to retraining on the selection
part; 0 = no loss) and the verdict-part removal of the best trial at the stop against at the cap. Then the best case
against the number of trials, per method (search depth).

    python benchmarks/search_stopping.py --methods gd,scrub,ssd,ngd --seeds 3 --cap 200

``--save FILE`` keeps the histories (JSON) and ``--load FILE`` evaluates rules on saved ones without re-running.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np

from unlearn_search.stopping import StopRule

RULES = [(20, 10, 0.01), (20, 20, 0.01), (20, 30, 0.01), (20, 30, 0.0), (20, 40, 0.01), (20, 50, 0.01),
         (30, 30, 0.02)]


def run_studies(methods: list[str], seeds: int, cap: int) -> dict[str, list[dict]]:
    from search_common import quiet, run_study, setting

    from unlearn_search import search

    quiet()
    out: dict[str, list[dict]] = {}
    t0 = time.perf_counter()
    for seed in range(seeds):
        s = setting(seed)
        for name in methods:
            study = run_study(name, s, cap)
            trials = sorted((t for t in study.get_trials(deepcopy=False) if t.state.is_finished()),
                            key=lambda t: t.number)
            removal = [t.user_attrs.get("metrics", {}).get("removal", math.nan) if search.is_feasible(t) else math.nan
                       for t in trials]
            out.setdefault(name, []).append({"seed": seed, "history": search.objective_history(trials),
                                             "removal": removal})
            print(f"seed {seed} {name}: {cap} trials, {time.perf_counter() - t0:.0f} s so far", flush=True)
    return out


def _best_at(history: list[float], removal: list[float], n: int) -> tuple[float, float]:
    """(best feasible objective among the first n, that trial's verdict-part removal)."""
    h = np.asarray(history[:n], float)
    if not np.isfinite(h).any():
        return math.nan, math.nan
    i = int(np.nanargmax(h))
    return float(h[i]), float(removal[i])


def evaluate_rules(data: dict[str, list[dict]], cap: int) -> None:
    print(f"\n| rule (min, patience, tolerance) | stops after (median, max) | left at the cap {cap} | objective gap "
          f"to the cap's best (mean, max) | verdict-part removal at the stop / at the cap (mean) |")
    print("|---|---|---|---|---|")
    for mn, pat, tol in RULES:
        rule = StopRule("settled", mn, pat, tol)
        stops, gaps, at_stop, at_cap, capped = [], [], [], [], 0
        for runs in data.values():
            for r in runs:
                h = r["history"][:cap]
                n = rule.settled_at(h)
                capped += n is None
                n = n or len(h)
                stops.append(n)
                best_stop, rem_stop = _best_at(h, r["removal"], n)
                best_cap, rem_cap = _best_at(h, r["removal"], len(h))
                if math.isfinite(best_cap):
                    gaps.append(best_cap - best_stop if math.isfinite(best_stop) else math.inf)
                    at_stop.append(rem_stop)
                    at_cap.append(rem_cap)
        g = np.asarray(gaps)
        print(f"| {mn}, {pat}, {tol:g} | {int(np.median(stops))}, {max(stops)} | {capped} of {len(stops)} | "
              f"{np.mean(g[np.isfinite(g)]):.3f}, {np.max(g):.3f} | {np.nanmean(at_stop):.2f} / "
              f"{np.nanmean(at_cap):.2f} |")
    checkpoints = [n for n in (20, 50, 100, 150, 200, 300) if n <= cap]
    print("\n| method | " + " | ".join(f"best objective after {n} (removal)" for n in checkpoints) + " |")
    print("|---|" + "---|" * len(checkpoints))
    for name, runs in data.items():
        cells = []
        for n in checkpoints:
            pairs = [_best_at(r["history"], r["removal"], n) for r in runs]
            cells.append(f"{np.nanmean([p[0] for p in pairs]):.3f} ({np.nanmean([p[1] for p in pairs]):.2f})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\nmeans over {len(next(iter(data.values())))} seeds; objective = -|1 - removal| on the selection part "
          "(0 = retraining); removal: the best trial's on the verdict part")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="gd,scrub,ssd,ngd")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--cap", type=int, default=200)
    p.add_argument("--save", default="")
    p.add_argument("--load", default="")
    a = p.parse_args()
    t0 = time.perf_counter()
    if a.load:
        with open(a.load) as f:
            data = json.load(f)
    else:
        data = run_studies(a.methods.split(","), a.seeds, a.cap)
        if a.save:
            with open(a.save, "w") as f:
                json.dump(data, f)
    evaluate_rules(data, a.cap)
    print(f"{time.perf_counter() - t0:.0f} s in all")


if __name__ == "__main__":
    main()
