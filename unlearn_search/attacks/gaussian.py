"""Gaussian data poisoning (Pawelczyk et al., ICLR 2025; docs/paper.md 3.1).

Threat model: the attacker adds i.i.d. noise xi_z ~ N(0, eps^2 I) to the inputs of exactly
``round(poison_fraction * n_train)`` training points (``poison_fraction`` itself when it is 1 or more: a count,
`attacks.poison_count`), leaving labels unchanged. The noise enters in the raw input space ([0, 1] pixels, before
any normalisation or augmentation) and is not clipped, so that the GUS statistic's null distribution is exactly
N(0, 1). The noise and a second, independent draw (the null for ``gus_auc``) are kept.

Text (`data.text`; the first author's later code): the noise is added to the poison's input token embeddings right
after the lookup, before the position embeddings, fixed per poison: the poison row keeps its clean token ids and
carries the seed of its noise (and ``eps``), which the model regenerates (`data.text.embedding_noise`, zero at
padding). GUS then takes the gradient with respect to the clean input embeddings (`metrics.gus.embedding_gradients`),
flattened over tokens x dimensions; padding positions carry neither noise nor gradient, so they do not count, and
I_z is again exactly N(0, 1) for a model that never saw the noise. The seeds, not the noise, are stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..context import RunContext
from ..data import Dataset
from ..errors import UsageError, check_range
from ..metrics.gus import Z_99, embedding_gradients, gus_statistic, gus_summary, input_gradients
from ..verdict import GAUSSIAN_RESIDUE
from . import ATTACKS, Attack, Poisoning, Victim, poison_amount


@dataclass(frozen=True)
class GaussianConfig:
    # The embedded default (digits + MLP, 60 epochs): 30% poisons (431 of 1,437), so that the verdict can show
    # equivalence: an independent retraining reads "removed" in 9 of 10 seeds (15% poisons: 4 of 10; the poisoned
    # model's mean I_z is about 0.4 whatever eps or recipe, so only the count adds power; docs/statistics.md,
    # benchmarks/verdict_known_answer.py). The paper's own epsilon is not known to us.
    poison_fraction: float = 0.3
    eps: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "poison_fraction", poison_amount(self.poison_fraction))  # a fraction or a count
        check_range("eps", self.eps, low=0, low_open=True)


@ATTACKS.register("gaussian")
class GaussianPoisoning(Attack):
    name = "gaussian"
    Config = GaussianConfig
    removal_metric = "gus_z"
    columns = (("gus", "GUS"), ("gus_z", "GUS z"), ("gus_pvalue", "GUS p"), ("gus_tpr_at_1fpr", "GUS TPR@1%FPR"))
    cfg: GaussianConfig

    def craft(self, data: Dataset, ctx: RunContext, victim: Victim | None = None) -> Poisoning:
        n = len(data.x_train)
        k = self.n_poisons(n)
        if k < 2:
            raise UsageError(f"poison_fraction={self.cfg.poison_fraction} poisons {k} of {n} points; need >= 2")
        gen = ctx.generator(offset=101)
        indices = torch.randperm(n, generator=gen)[:k].sort().values
        x_clean = data.x_train[indices]
        if data.is_text:
            from ..data.text import with_noise

            seeds = torch.randint(0, 2**31, (2, k), generator=gen)  # torch seeds its generator from the low 32 bits
            return Poisoning(indices=indices, x_poison=with_noise(x_clean, seeds[0], self.cfg.eps),
                             y_poison=data.y_train[indices].clone(),
                             arrays={"noise_seed": seeds[0], "indep_seed": seeds[1]})
        noise = self.cfg.eps * torch.randn(x_clean.shape, generator=gen)
        indep = self.cfg.eps * torch.randn(x_clean.shape, generator=gen)
        return Poisoning(
            indices=indices,
            x_poison=x_clean + noise,
            y_poison=data.y_train[indices].clone(),
            arrays={"noise": noise, "indep_noise": indep},
        )

    residual_test = ("two-sided z-test of mean I_z against its exact N(0, 1) law without the poison (a mirrored "
                     "poison, mean I_z < 0, is a residue too)")
    residue = GAUSSIAN_RESIDUE
    seed_combination = "chi2_stouffer"

    def residual_z(self, scores_unlearned: np.ndarray) -> float:
        """mean I_z · sqrt(k): exactly N(0, 1) for a model that never saw the noise."""
        return float(np.mean(scores_unlearned)) * float(np.sqrt(len(scores_unlearned)))

    def residual_pvalue(self, scores_unlearned: np.ndarray, scores_retrain: np.ndarray) -> float:
        """Two-sided: p = 2 Φ(-|z|), z = mean I_z · sqrt(k), exactly N(0, 1) for a model that never saw the noise."""
        from ..metrics.roc import normal_sf  # = scipy.stats.norm.sf, without its per-call overhead

        return min(1.0, 2 * normal_sf(abs(self.residual_z(scores_unlearned))))

    def poison_pvalue(self, scores_poisoned: np.ndarray, scores_retrain: np.ndarray) -> float:
        """One-sided: the poisoned model's mean I_z is positive."""
        from ..metrics.roc import normal_sf

        return normal_sf(self.residual_z(scores_poisoned))

    def n_units(self, data: Dataset) -> int | None:
        return self.n_poisons(len(data.x_train))

    def part_metrics(self, scores: np.ndarray) -> dict[str, float]:
        """GUS over a part of the poisons: mean I_z, its z-score, its two-sided p-value and the share above the
        one-sided 1% threshold (the fresh-noise AUC stays over all poisons)."""
        if not len(scores):
            return {}
        z = self.residual_z(scores)
        return {"gus": float(np.mean(scores)), "gus_z": z, "gus_pvalue": self.residual_pvalue(scores, scores),
                "gus_tpr_at_1fpr": float(np.mean(np.asarray(scores) > Z_99)), "gus_n": float(len(scores)),
                "gus_se": float(np.std(scores, ddof=1) / np.sqrt(len(scores))) if len(scores) > 1 else math.nan}

    def evaluate_with_scores(
        self, model: nn.Module, data: Dataset, poisoning: Poisoning, ctx: RunContext
    ) -> tuple[dict[str, float], np.ndarray]:
        # Evaluated at the *clean* inputs with their true labels, never with augmentation (eval mode).
        if data.is_text:
            return self._text_scores(model, data, poisoning, ctx)
        grads = input_gradients(model, data.x_train[poisoning.indices], data.y_train[poisoning.indices], ctx.device)
        i_poison = gus_statistic(grads, poisoning.arrays["noise"], self.cfg.eps)
        i_indep = gus_statistic(grads, poisoning.arrays["indep_noise"], self.cfg.eps)
        return gus_summary(i_poison, i_indep), i_poison.numpy()

    def _text_scores(self, model: nn.Module, data: Dataset, poisoning: Poisoning,
                     ctx: RunContext) -> tuple[dict[str, float], np.ndarray]:
        from ..data.text import embedding_noise, noise_scale, split_rows

        x_clean = data.x_train[poisoning.indices]
        grads = embedding_gradients(model, x_clean, data.y_train[poisoning.indices], ctx.device)
        _, mask, _, _ = split_rows(x_clean)
        eps = noise_scale(self.cfg.eps)  # the scale the rows carry, hence the model's noise
        scales = torch.full((len(x_clean),), eps, dtype=torch.float64)
        stats = [gus_statistic(grads, embedding_noise(poisoning.arrays[key], scales, mask, grads.shape[-1]), eps)
                 for key in ("noise_seed", "indep_seed")]
        return gus_summary(*stats), stats[0].numpy()

    subset_key = "gus_z"

    def subset_metrics(self, scores: np.ndarray) -> dict[str, float] | None:
        """GUS (mean I_z) and its z-score over a subset of the poisons' I_z."""
        return {"gus": float(np.mean(scores)), "gus_z": float(np.mean(scores)) * float(np.sqrt(len(scores)))}

    def evaluate(self, model: nn.Module, data: Dataset, poisoning: Poisoning, ctx: RunContext) -> dict[str, float]:
        return self.evaluate_with_scores(model, data, poisoning, ctx)[0]

    def scores(self, model: nn.Module, data: Dataset, poisoning: Poisoning, ctx: RunContext) -> np.ndarray:
        """Per-poison I_z, in poison order (also what the I_z distribution plots show)."""
        return self.evaluate_with_scores(model, data, poisoning, ctx)[1]
