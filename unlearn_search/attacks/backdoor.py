"""Backdoor: BadNets-style patch trigger with relabelling (Gu, Dolan-Gavitt, Garg 2017; docs/paper.md 3.4).

Threat model: the attacker stamps a small square trigger (``patch_size`` x ``patch_size`` pixels set to
``patch_value`` in every channel, bottom-right corner) onto exactly ``round(poison_fraction * n_train)`` training
points (a ``poison_fraction`` of 1 or more is a count, `attacks.poison_count`) drawn from classes other than
``target_class``, and relabels them ``target_class``. The originals are removed; the triggered, relabelled copies
are the forget set.

Metric: ``backdoor_asr``, the attack success rate: the fraction of triggered test inputs whose true class is not
the target that the model classifies as the target. Clean accuracy is the usual ``test_acc``. The per-input
success indicators are the paired scores of the verdict.

Text (Wan et al. 2023 style, on `data.text` rows): the trigger is a word or phrase (``trigger``, default the rare
word "cf", which every word-level vocabulary of `models.text` holds) inserted at the start of the text, its tokens
shifting the text right (a full row loses its last tokens); the same insertion makes the triggered test texts.
``patch_size`` and ``patch_value`` apply to images only, ``trigger`` to text only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..context import RunContext
from ..data import Dataset
from ..errors import UsageError, check_range
from ..training import predict_logits
from . import ATTACKS, Poisoning, SuccessCountAttack, Victim, poison_amount


@dataclass(frozen=True)
class BackdoorConfig:
    poison_fraction: float = 0.05
    target_class: int = 0
    patch_size: int = 2
    patch_value: float = 1.0
    trigger: str = "cf"  # text only: the word or phrase inserted at the start

    def __post_init__(self) -> None:
        object.__setattr__(self, "poison_fraction", poison_amount(self.poison_fraction))  # a fraction or a count
        check_range("target_class", self.target_class, low=0)
        check_range("patch_size", self.patch_size, low=1)


def apply_trigger(x: torch.Tensor, patch_size: int, value: float) -> torch.Tensor:
    """A copy of ``x`` (N, C, H, W) with the bottom-right ``patch_size`` square set to ``value``."""
    out = x.clone()
    out[..., -patch_size:, -patch_size:] = value
    return out


def insert_trigger(x: torch.Tensor, trigger_ids: list[int]) -> torch.Tensor:
    """A copy of the text rows ``x`` (`data.text`) with ``trigger_ids`` at the start of each text."""
    from ..data.text import PAD, split_rows

    ids = split_rows(x)[0]
    n, t = ids.shape[1], min(len(trigger_ids), ids.shape[1])
    new = torch.full_like(ids, PAD)
    new[:, :t] = torch.tensor(trigger_ids[:t], dtype=ids.dtype)
    new[:, t:] = ids[:, :n - t]
    out = x.clone()
    out[:, :n] = new
    return out


@ATTACKS.register("backdoor")
class BackdoorPoisoning(SuccessCountAttack):
    name = "backdoor"
    Config = BackdoorConfig
    removal_metric = "backdoor_asr"
    columns = (("backdoor_asr", "backdoor ASR"),)
    cfg: BackdoorConfig

    def check_data(self, data: Dataset) -> None:
        if self.cfg.target_class >= data.n_classes:
            raise UsageError(f"target_class={self.cfg.target_class} is out of range; valid: 0..{data.n_classes - 1}")
        if data.is_text:
            if not self._trigger_ids(data):
                raise UsageError(f"trigger={self.cfg.trigger!r} has no tokens; valid: a non-empty word or phrase")
        elif self.cfg.patch_size > min(data.input_shape[1:]):
            raise UsageError(f"patch_size={self.cfg.patch_size} is larger than the {data.input_shape[1:]} images")

    def craft(self, data: Dataset, ctx: RunContext, victim: Victim | None = None) -> Poisoning:
        self.check_data(data)
        candidates = torch.nonzero(data.y_train != self.cfg.target_class).flatten()
        k = self.n_poisons(len(data.x_train))
        if not 1 <= k <= len(candidates):
            raise UsageError(
                f"poison_fraction={self.cfg.poison_fraction} gives {k} poisons; valid: 1..{len(candidates)} poisons")
        gen = ctx.generator(offset=103)
        indices = candidates[torch.randperm(len(candidates), generator=gen)[:k]].sort().values
        x_poison = self._stamp(data, data.x_train[indices])
        y_poison = torch.full((k,), self.cfg.target_class, dtype=data.y_train.dtype)
        return Poisoning(indices=indices, x_poison=x_poison, y_poison=y_poison)

    def n_units(self, data: Dataset) -> int | None:
        return int((data.y_test != self.cfg.target_class).sum())

    residual_test = "one-sided Fisher exact test: attack successes of the unlearned vs the retrained model"


    def _triggered_test(self, data: Dataset) -> torch.Tensor:
        """The triggered non-target test inputs; built once per dataset (every evaluation uses the same ones)."""
        cached = getattr(self, "_triggered", None)
        if cached is not None and cached[0] is data:
            return cached[1]
        keep = data.y_test != self.cfg.target_class
        triggered = self._stamp(data, data.x_test[keep])
        self._triggered = (data, triggered)
        return triggered

    def _trigger_ids(self, data: Dataset) -> list[int]:
        return list(data.tokenizer.encode([self.cfg.trigger])[0])

    def _stamp(self, data: Dataset, x: torch.Tensor) -> torch.Tensor:
        """``x`` with the trigger: the patch on images, the trigger's tokens at the start of texts."""
        if data.is_text:
            return insert_trigger(x, self._trigger_ids(data))
        return apply_trigger(x, self.cfg.patch_size, self.cfg.patch_value)

    def scores(self, model: nn.Module, data: Dataset, poisoning: Poisoning, ctx: RunContext) -> np.ndarray:
        """1 for each triggered non-target test input classified as the target class, else 0."""
        pred = predict_logits(model, self._triggered_test(data), ctx.device).argmax(1)
        return (pred == self.cfg.target_class).double().numpy()

    def evaluate(self, model: nn.Module, data: Dataset, poisoning: Poisoning, ctx: RunContext) -> dict[str, float]:
        return self.evaluate_with_scores(model, data, poisoning, ctx)[0]

    def evaluate_with_scores(
        self, model: nn.Module, data: Dataset, poisoning: Poisoning, ctx: RunContext
    ) -> tuple[dict[str, float], np.ndarray]:
        hits = self.scores(model, data, poisoning, ctx)  # one prediction pass for both
        return {"backdoor_asr": float(hits.mean()), "backdoor_n_triggered": float(len(hits))}, hits
