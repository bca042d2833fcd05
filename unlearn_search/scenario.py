"""A scenario: dataset + model recipe + attack + seed, and the two reference models judged against.

`ScenarioConfig` is pure configuration (validated on construction, hashed for reuse). `build_scenario` loads the
data and crafts the poisons; `train_references` trains the poisoned model on S_corr = retain ∪ poisons and the
retrained reference on the retain set alone, with the same recipe and seed (docs/paper.md section 1). No MLflow here.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .attacks import ATTACKS, Attack, Poisoning, Victim
from .compute import retrain_cost
from .context import RunContext
from .data import Dataset, check_dataset_name, dataset_fingerprint, load_dataset
from .data.text import is_text_dataset
from .errors import check_range
from .metrics import loss_mia
from .models import ModelSpec, check_model_name, create_model
from .models.text import is_text_model
from .training import TrainConfig, accuracy, accuracy_and_losses, train

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class ScenarioConfig:
    dataset: str = "digits"
    model: str = "mlp"
    attack: str = "gaussian"
    attack_params: dict[str, Any] = field(default_factory=dict)  # unset keys take the attack config's defaults
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        check_dataset_name(self.dataset)
        check_model_name(self.model)
        if is_text_dataset(self.dataset) != is_text_model(self.model):
            from .errors import UsageError

            kind = "text" if is_text_dataset(self.dataset) else "image"
            raise UsageError(f"model {self.model!r} does not fit the {kind} dataset {self.dataset!r}; valid: "
                             + ("hf:<name>, gpt2-tiny, gpt2-mini" if kind == "text" else
                                "mlp, cnn, linear, resnet18_cifar, timm:<architecture>"))
        attack_cls = ATTACKS.get(self.attack)
        check_range("seed", self.seed, low=0)
        # Normalise to the attack's full config (defaults filled in), so equal scenarios hash equally.
        full = vars(attack_cls.config_from(self.attack_params))
        object.__setattr__(self, "attack_params", dict(full))
        attack_cls.check_recipe(self.model, self.train)

    def make_attack(self) -> Attack:
        cls = ATTACKS.get(self.attack)
        return cls(cls.config_from(self.attack_params))

    def to_flat(self) -> dict[str, Any]:
        """Flat, sorted parameter dict: what is logged as MLflow params/tags and hashed."""
        flat: dict[str, Any] = {"dataset": self.dataset, "model": self.model, "attack": self.attack,
                                "seed": self.seed}
        fingerprint = dataset_fingerprint(self.dataset)
        if fingerprint:  # a user's files: edited data must not reuse references trained on the old contents
            flat["dataset.fingerprint"] = fingerprint
        flat.update({f"attack.{k}": v for k, v in self.attack_params.items()})
        train = self.train.to_dict()
        if not is_text_dataset(self.dataset):
            del train["max_length"]  # images have no sequence length (and keep the hashes they had before it)
        flat.update({f"train.{k}": v for k, v in train.items()})
        return dict(sorted(flat.items()))

    @property
    def hash(self) -> str:
        blob = json.dumps(self.to_flat(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class Scenario:
    """A built scenario: the data, the poisons and the three sets methods work with."""

    config: ScenarioConfig
    data: Dataset
    poisoning: Poisoning
    attack: Attack

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec(self.config.model, self.data.input_shape, self.data.n_classes, self.data.vocab_size)

    @property
    def retain_mask(self) -> torch.Tensor:
        mask = torch.ones(len(self.data.x_train), dtype=torch.bool)
        mask[self.poisoning.indices] = False
        return mask

    @property
    def retain(self) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.retain_mask
        return self.data.x_train[m], self.data.y_train[m]

    @property
    def forget(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.poisoning.x_poison, self.poisoning.y_poison

    @property
    def corrupted(self) -> tuple[torch.Tensor, torch.Tensor]:
        """S_corr = retain ∪ poisons: what the poisoned model is trained on."""
        xr, yr = self.retain
        return torch.cat([xr, self.poisoning.x_poison]), torch.cat([yr, self.poisoning.y_poison])

    @property
    def retrain_cost(self) -> float:
        return retrain_cost(self.config.train.epochs, int(self.retain_mask.sum()))


def build_scenario(cfg: ScenarioConfig, ctx: RunContext, poisoning: Poisoning | None = None) -> Scenario:
    """Load the data and craft the poisons (or take ``poisoning`` as given, when reusing a stored scenario)."""
    data = load_dataset(cfg.dataset, cfg.model, cfg.train.max_length)
    attack = cfg.make_attack()
    if poisoning is None:
        victim = Victim(ModelSpec(cfg.model, data.input_shape, data.n_classes, data.vocab_size), cfg.train)
        poisoning = attack.craft(data, ctx.child(7), victim)
    log.info("scenario %s: %d training points, %d poisons (%s)", cfg.hash, len(data.x_train),
             poisoning.n_poison, cfg.attack)
    return Scenario(config=cfg, data=data, poisoning=poisoning, attack=attack)


def train_references(scenario: Scenario, ctx: RunContext) -> dict[str, nn.Module]:
    """Train the poisoned model (on S_corr) and the retrained reference (on retain) with one recipe and seed."""
    cfg = scenario.config
    out: dict[str, nn.Module] = {}
    every = max(cfg.train.epochs // 5, 1)  # progress: five lines per model
    for role, (x, y) in (("poisoned", scenario.corrupted), ("retrain", scenario.retain)):
        model = create_model(scenario.spec, seed=cfg.seed)

        def on_epoch(epoch: int, loss: float, role: str = role) -> None:
            if (epoch + 1) % every == 0 or epoch + 1 == cfg.train.epochs:
                log.info("  %s: epoch %d/%d loss %.4f", role, epoch + 1, cfg.train.epochs, loss)

        out[role] = train(model, x, y, cfg.train, ctx.child(11), on_epoch=on_epoch)
    return out


def evaluate(model: nn.Module, scenario: Scenario, ctx: RunContext) -> dict[str, float]:
    """Utility on test / retain / forget, the attack's own metrics, and the loss-based MIA (forget vs test)."""
    return evaluate_with_scores(model, scenario, ctx)[0]


def evaluate_with_scores(model: nn.Module, scenario: Scenario, ctx: RunContext) -> tuple[dict[str, float], Any]:
    """`evaluate`, plus the attack's per-poison scores from the same pass (see `Attack.scores`)."""
    dev = ctx.device
    xr, yr = scenario.retain
    xf, yf = scenario.forget
    d = scenario.data
    # test and forget: accuracy and the MIA's per-sample losses from the same forward pass (same numbers)
    test_acc, test_loss = accuracy_and_losses(model, d.x_test, d.y_test, dev)
    forget_acc, forget_loss = accuracy_and_losses(model, xf, yf, dev)
    metrics = {"test_acc": test_acc, "retain_acc": accuracy(model, xr, yr, dev), "forget_acc": forget_acc}
    metrics.update(loss_mia(forget_loss, test_loss))
    attack_metrics, scores = scenario.attack.evaluate_with_scores(model, d, scenario.poisoning, ctx)
    metrics.update(attack_metrics)
    return metrics, scores
