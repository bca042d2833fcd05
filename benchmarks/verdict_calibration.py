"""The verdict's error rates by simulation, against the number of poisons (docs/statistics.md, its figure).

Simulated per-poison I_z with the structure measured on the embedded default (benchmarks/verdict_known_answer.py
and docs/statistics.md): without the poison I_z ~ N(0, 1) exactly; the poisoned model's mean I_z is 0.4 with its
I_z correlated 0.75 with the retrained reference's; a model near retraining correlates 0.9 with it. Four kinds of
model are judged exactly as a method's best model is (`Yardstick.judge`, `verdict.decide`, default split and
margin): a null model (never saw the poison: the right answer is "removed"), a model at the margin's edge (residue
20% of the poisoned one's: "removed" must stay below 5%), a half-unlearned model (50%) and the poisoned model
itself ("not removed"). Writes docs/img/verdict_calibration.png and prints the rates:

    python benchmarks/verdict_calibration.py --reps 400
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from unlearn_search import verdict
from unlearn_search.attacks import ATTACKS
from unlearn_search.context import RunContext
from unlearn_search.unlearning import Yardstick

MU_POISONED, RHO_POISONED, RHO_NEAR = 0.4, 0.75, 0.9
KINDS = {"null (never saw it)": 0.0, "at the margin (20% left)": 0.2, "half unlearned (50% left)": 0.5,
         "poisoned (100% left)": 1.0}


def rates(n: int, left: float, reps: int, rng: np.random.Generator) -> dict[str, float]:
    attack = ATTACKS.get("gaussian")(ATTACKS.get("gaussian").config_from({}))
    counts = dict.fromkeys((verdict.REMOVED, verdict.NOT_REMOVED, verdict.INCONCLUSIVE, verdict.TOO_WEAK), 0)
    for rep in range(reps):
        ref = rng.standard_normal(n)
        poisoned = MU_POISONED + RHO_POISONED * ref + math.sqrt(1 - RHO_POISONED ** 2) * rng.standard_normal(n)
        if left == 1.0:
            model = poisoned
        else:  # residue `left` x the poisoned one's, correlated with the reference like a model near retraining
            model = left * poisoned + (1 - left) * (RHO_NEAR * ref + math.sqrt(1 - RHO_NEAR ** 2)
                                                    * rng.standard_normal(n))
        yard = Yardstick.of(attack, poisoned, ref, RunContext(seed=rep))
        m = yard.judge(attack, model)
        counts[verdict.decide(m["removal_pvalue"], m["equivalence_pvalue"], bool(m["attack_too_weak"]))] += 1
    return {k: v / reps for k, v in counts.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=400)
    p.add_argument("--counts", default="50,100,216,431,800,1600")
    p.add_argument("--out", default="docs/img/verdict_calibration.png")
    a = p.parse_args()
    rng = np.random.default_rng(20261202)
    counts = [int(x) for x in a.counts.split(",")]
    table = {kind: [rates(n, left, a.reps, rng) for n in counts] for kind, left in KINDS.items()}
    print("| model | " + " | ".join(f"{n} poisons" for n in counts) + " |")
    print("|---|" + "---|" * len(counts))
    for kind, row in table.items():
        print(f"| {kind} | " + " | ".join(
            f"removed {r[verdict.REMOVED]:.2f}, not removed {r[verdict.NOT_REMOVED]:.2f}, inconclusive "
            f"{r[verdict.INCONCLUSIVE]:.2f}" + (f", too weak {r[verdict.TOO_WEAK]:.2f}" if r[verdict.TOO_WEAK] else "")
            for r in row) + " |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8), sharey=True)
    for ax, (kind, row) in zip(axes, table.items(), strict=True):
        for answer, colour in ((verdict.REMOVED, "tab:green"), (verdict.NOT_REMOVED, "tab:red"),
                               (verdict.INCONCLUSIVE, "tab:gray"), (verdict.TOO_WEAK, "tab:orange")):
            ax.plot(counts, [r[answer] for r in row], marker="o", color=colour, label=answer)
        ax.axhline(0.05, color="black", lw=0.6, ls=":")
        ax.set_xscale("log")
        ax.set_title(kind, fontsize=10)
        ax.set_xlabel("poisons (30% select, 70% verdict)")
    axes[0].set_ylabel("share of answers")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"The verdict's answers by simulation ({a.reps} repetitions per point; dotted: 5%)", fontsize=11)
    fig.tight_layout()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=110)
    print(f"figure: {a.out}")


if __name__ == "__main__":
    main()
