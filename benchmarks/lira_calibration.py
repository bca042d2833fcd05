"""LiRA's null, measured: the false-positive rate on poisons a model never saw, against the number of shadows.

On the embedded default (seed 0): the shadow models (`analysis.shadow_models`, as `analyze` trains them: replicate
pairs of the poisoned and the retrained model's trainings), and several independent retrainings without the poisons
(other initialisations and data orders: models that never saw them, so every poison they flag is a false positive).
For each shadow count (the first n shadows, n/2 pairs), LiRA (`analysis.lira`: the null calibrated on the poisons
themselves by leaving one pair out) scores the
retrained reference, the independent retrainings and the poisoned model. Prints TPR at 1% FPR (for a model that
never saw the poisons: its false-positive rate, which must stay at 0.01) and AUC (0.5 for such a model):

    python benchmarks/lira_calibration.py --shadows 6,8,16,32 --independent 6
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from unlearn_search import analysis
from unlearn_search.context import RunContext
from unlearn_search.models import create_model
from unlearn_search.scenario import ScenarioConfig, build_scenario, train_references
from unlearn_search.training import train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shadows", default="6,8,16,32")
    p.add_argument("--independent", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(1)
    counts = [int(x) for x in a.shadows.split(",")]
    t0 = time.perf_counter()
    cfg = ScenarioConfig(seed=a.seed)
    ctx = RunContext(seed=a.seed, device=torch.device("cpu"))
    sc = build_scenario(cfg, ctx)
    refs = train_references(sc, ctx)
    xr, yr = sc.retain
    independent = [train(create_model(sc.spec, seed=a.seed + 10_000 + i), xr, yr, cfg.train, ctx.child(500 + i)).eval()
                   for i in range(a.independent)]
    shadows = analysis.shadow_models(sc, max(counts), ctx)
    full = analysis.fit_shadows(shadows, sc, ctx.device)
    print(f"trained in {time.perf_counter() - t0:.0f} s; {sc.poisoning.n_poison} poisons")
    print("| shadows | retrained reference: TPR@1%FPR, AUC | independent retrainings: TPR@1%FPR (mean ± sd), AUC "
          "(mean ± sd) | poisoned: TPR@1%FPR, AUC |")
    print("|---|---|---|---|")
    for n in counts:
        fits = analysis.ShadowFits(full.phis[:n])
        ref = analysis.lira(refs["retrain"], sc, fits, ctx.device)
        ind = [analysis.lira(m, sc, fits, ctx.device) for m in independent]
        poi = analysis.lira(refs["poisoned"], sc, fits, ctx.device)
        fpr = np.array([r["lira_tpr_at_1fpr"] for r in ind])
        auc = np.array([r["lira_auc"] for r in ind])
        print(f"| {n} | {ref['lira_tpr_at_1fpr']:.4f}, {ref['lira_auc']:.3f} | {fpr.mean():.4f} ± "
              f"{fpr.std(ddof=1):.4f}, {auc.mean():.3f} ± {auc.std(ddof=1):.3f} | {poi['lira_tpr_at_1fpr']:.3f}, "
              f"{poi['lira_auc']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
