"""The verdict's known answer on real models of the embedded default (docs/statistics.md): an independent
retraining (same retain set, another initialisation and data order) judged exactly as a method's best model is
reads "removed" in at least 80% of seeds, and the poisoned model reads "not removed" in every seed. This is what the
default's 30% poisons were calibrated for (with 15% the retraining read "removed" in only 4 of 10 seeds)."""

from __future__ import annotations

import torch

from unlearn_search import verdict
from unlearn_search.context import RunContext
from unlearn_search.models import create_model
from unlearn_search.scenario import ScenarioConfig, build_scenario
from unlearn_search.training import train
from unlearn_search.unlearning import Yardstick


def _answers(seed: int) -> tuple[str, str]:
    cfg = ScenarioConfig(seed=seed)
    ctx = RunContext(seed=seed, device=torch.device("cpu"))
    sc = build_scenario(cfg, ctx)
    scores = {}
    for role, (x, y), model_seed, offset in (("poisoned", sc.corrupted, seed, 11), ("retrain", sc.retain, seed, 11),
                                             ("independent", sc.retain, seed + 10_000, 13)):
        model = train(create_model(sc.spec, seed=model_seed), x, y, cfg.train, ctx.child(offset))
        scores[role] = sc.attack.scores(model, sc.data, sc.poisoning, ctx)
    yard = Yardstick.of(sc.attack, scores["poisoned"], scores["retrain"], ctx)
    out = []
    for who in ("independent", "poisoned"):
        m = yard.judge(sc.attack, scores[who])
        out.append(verdict.decide(m["removal_pvalue"], m["equivalence_pvalue"], bool(m["attack_too_weak"])))
    return out[0], out[1]


def test_an_independent_retraining_reads_removed_and_the_poisoned_model_not_removed():
    answers = [_answers(seed) for seed in range(5)]
    assert sum(a == verdict.REMOVED for a, _ in answers) >= 4, answers
    assert all(p == verdict.NOT_REMOVED for _, p in answers), answers
