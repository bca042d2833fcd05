"""Scenario presets: named defaults for the dataset, the model, the training recipe and the attack parameters.

Every entry point takes ``--preset`` (``-P preset=...``); a flag given explicitly overrides the preset's value,
and a flag left at ``default`` takes it. ``default`` is the embedded scenario (digits, MLP, 60 epochs of Adam);
``paper`` is the study's scale; ``paper-small`` is the same kind of scenario cut down to run on 2 CPU cores in
minutes (for smoke tests and for users without a GPU).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .registry import Registry
from .training import TrainConfig


@dataclass(frozen=True)
class Preset:
    summary: str
    dataset: str
    model: str
    train: TrainConfig
    #: attack name -> parameters that replace the attack's own defaults under this preset
    attack_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: scenario seeds `compare` / `main` run by default (each a full scenario with its own references)
    seeds: int = 3


PRESETS: Registry[Preset] = Registry("preset")

PRESETS.register("default")(Preset(
    summary="the embedded default: scikit-learn digits, MLP, 60 epochs of Adam (minutes on 2 CPU cores)",
    dataset="digits", model="mlp", train=TrainConfig(),
))

#: The study's recipe (docs/paper.md 7): CIFAR-10, the CIFAR ResNet-18, 100 epochs of SGD with the standard recipe
#: (lr 0.1, momentum 0.9, weight decay 5e-4, cosine schedule, random crop + flip, batch 128). Gaussian poisoning as
#: the paper's figure caption gives it (docs/paper.md 8): 750 of the 50,000 training points (a count: `poison_fraction`
#: of 1 or more is a number of poisons) with ε_p = 0.3, the likelier reading of its printed "ε_p² = 0.32" (the other,
#: a variance of 0.32, is ε_p ≈ 0.57: -P eps=0.57; the paper's larger forget sets: -P poison_fraction=1000 / 1250).
#: The noise is added to [0, 1] pixels, before augmentation (the paper does not say where). Not run at this scale
#: yet (no GPU).
PAPER_TRAIN = TrainConfig(epochs=100, batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4,
                          lr_schedule="cosine", augment="crop_flip")
PRESETS.register("paper")(Preset(
    summary="the paper's scale: CIFAR-10, CIFAR ResNet-18, 100 epochs of SGD (a GPU)",
    dataset="cifar10", model="resnet18_cifar", train=PAPER_TRAIN,
    attack_params={"gaussian": {"poison_fraction": 750, "eps": 0.3}},  # 750 poisons of CIFAR-10's 50,000
    seeds=8,  # as the paper did for vision (docs/paper.md 8)
))

PRESETS.register("paper-small")(Preset(
    summary="paper-like but small: a 2000/500 CIFAR-10 subset, the small CNN, 15 epochs (minutes on 2 CPU cores)",
    dataset="cifar10@2000,500", model="cnn",
    train=TrainConfig(epochs=15, batch_size=128, optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4,
                      lr_schedule="cosine", augment="crop_flip"),
    attack_params={"gaussian": {"poison_fraction": 0.1, "eps": 0.1}},
))

#: The language track (docs/paper.md 8): GPT-2 medium fine-tuned in full on IMDb with Adam, 5 seeds as reported. The
#: paper reportedly gave GPT-2 one epoch of unlearning; with 10 epochs of fine-tuning, tune's largest budget (0.1 of
#: retraining) is that one epoch, as 10% is 10 of 100 epochs on CIFAR-10. 1.5% of the texts poisoned (as the vision
#: forget sets); the embedding noise scale for GPT-2 is not known (the first author's later configs use 0.5 and
#: 1e-3): 0.1 is ours, about the size of GPT-2's own token embeddings per dimension, and has not been measured.
PRESETS.register("paper-llm")(Preset(
    summary="the paper's language track: IMDb, GPT-2 medium (hf:gpt2-medium), 10 epochs of Adam (a GPU, network)",
    dataset="imdb", model="hf:gpt2-medium",
    train=TrainConfig(epochs=10, batch_size=16, optimizer="adam", lr=2e-5, max_length=256),
    attack_params={"gaussian": {"poison_fraction": 0.015, "eps": 0.1}},
    seeds=5,
))

#: The language track on 2 CPU cores: the generated sentiment task, a 2-layer GPT-2 built from a config with a
#: tokenizer built from the texts (no download), 32 tokens per text. Calibrated like the embedded default, over
#: seeds 0-2 (docs/language.md): eps = 0.1 gave the poisoned model GUS z 5.51, 4.19, 3.27 and the retrained model
#: -0.33, -0.67, -0.94 (eps = 0.3: 2.23 on seed 0; 60 epochs: 6.30 on seed 0, at 1.5x the time).
PRESETS.register("llm-small")(Preset(
    summary="the language track small: generated sentiment texts, a 2-layer GPT-2 (gpt2-tiny), 40 epochs of Adam "
            "(minutes on 2 CPU cores, offline)",
    dataset="sentiment", model="gpt2-tiny",
    train=TrainConfig(epochs=40, batch_size=64, optimizer="adam", lr=3e-3, max_length=32),
    attack_params={"gaussian": {"poison_fraction": 0.1, "eps": 0.1}},
))

__all__ = ["PRESETS", "Preset"]
