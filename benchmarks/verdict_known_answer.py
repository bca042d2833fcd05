"""The verdict's known answer on the embedded default: an independent retraining judged as if it were a method.

For each scenario seed: the poisoned model and the retrained reference as `poison` trains them, plus one more
retraining on the same retain set with another training seed (a model that never saw the poisons, so the right
answer is "removed"); the independent retraining is judged exactly as a method's best model is (`Yardstick.judge`,
`verdict.decide`), and the poisoned model too (the right answer: "not removed"). Prints, per poison fraction and
split fraction, how often each answer came out. Used to calibrate the default (docs/statistics.md):

    python benchmarks/verdict_known_answer.py --seeds 10 --fractions 0.15,0.3,0.4 --select 0.3,0.5
"""

from __future__ import annotations

import argparse
import collections

import numpy as np
import torch

from unlearn_search import verdict
from unlearn_search.context import RunContext
from unlearn_search.models import create_model
from unlearn_search.scenario import ScenarioConfig, build_scenario
from unlearn_search.training import train
from unlearn_search.unlearning import Yardstick


def scores_for(fraction: float, seed: int) -> tuple[object, dict[str, np.ndarray]]:
    cfg = ScenarioConfig(attack_params={"poison_fraction": fraction}, seed=seed)
    ctx = RunContext(seed=seed, device=torch.device("cpu"))
    sc = build_scenario(cfg, ctx)
    out = {}
    runs = (("poisoned", sc.corrupted, seed, 11), ("retrain", sc.retain, seed, 11),
            ("independent", sc.retain, seed + 10_000, 13))  # another initialisation and another data order
    for role, (x, y), model_seed, offset in runs:
        model = train(create_model(sc.spec, seed=model_seed), x, y, cfg.train, ctx.child(offset))
        out[role] = sc.attack.scores(model, sc.data, sc.poisoning, ctx)
    return sc, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--fractions", default="0.3")
    p.add_argument("--select", default=str(verdict.SELECT_FRACTION))
    p.add_argument("--margin", type=float, default=verdict.EQUIVALENCE_MARGIN)
    a = p.parse_args()
    torch.set_num_threads(1)
    selects = [float(x) for x in a.select.split(",")]
    for fraction in (float(x) for x in a.fractions.split(",")):
        counts = {s: collections.Counter() for s in selects}
        poisoned_counts = {s: collections.Counter() for s in selects}
        for seed in range(a.seeds):
            sc, s = scores_for(fraction, seed)
            for sel in selects:
                ctx = RunContext(seed=seed, device=torch.device("cpu"))
                yard = Yardstick.of(sc.attack, s["poisoned"], s["retrain"], ctx, sel, a.margin)
                for who, tally in (("independent", counts[sel]), ("poisoned", poisoned_counts[sel])):
                    m = yard.judge(sc.attack, s[who])
                    answer = verdict.decide(m["removal_pvalue"], m["equivalence_pvalue"], bool(m["attack_too_weak"]))
                    tally[answer] += 1
                    if who == "independent":
                        print(f"poison_fraction {fraction:g} select {sel:g} seed {seed}: {answer} (removal "
                              f"{m['removal']:.3f}, residue {m['residue']:.3f} ± {m['residue_se']:.3f}, margin "
                              f"{m['equivalence_margin_abs']:.3f}, equivalence p {m['equivalence_pvalue']:.3g})",
                              flush=True)
        for sel in selects:
            n = a.seeds
            print(f"SUMMARY poison_fraction {fraction:g} select_fraction {sel:g}: independent retraining "
                  + ", ".join(f"{k} {v}/{n}" for k, v in sorted(counts[sel].items()))
                  + "; poisoned model " + ", ".join(f"{k} {v}/{n}" for k, v in sorted(poisoned_counts[sel].items())),
                  flush=True)


if __name__ == "__main__":
    main()
