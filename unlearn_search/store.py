"""Scenario references in MLflow: find them in the Model Registry by scenario hash, or build and register them.

This is the one place that joins the pure scenario code with the tracking layer. A scenario is identified by the
hash of its parameters (`ScenarioConfig.hash`); its reference versions carry the tag ``scenario_hash`` so that a
second run with the same parameters trains nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from torch import nn

from . import tracking
from .attacks import Poisoning
from .context import RunContext
from .models import load_model
from .scenario import Scenario, ScenarioConfig, build_scenario, evaluate, train_references

log = logging.getLogger(__name__)

ROLES = ("poisoned", "retrain")
POISONING_ARTIFACT = "poisoning/poisoning.npz"


@dataclass(frozen=True)
class References:
    scenario: Scenario
    models: dict[str, nn.Module]
    metrics: dict[str, dict[str, float]]
    versions: dict[str, tracking.VersionRef]
    scenario_run_id: str
    reused: bool


def find_references(cfg: ScenarioConfig, ctx: RunContext) -> References | None:
    """The registered references of ``cfg``'s scenario, loaded, or None if any is missing."""
    found = {}
    for role in ROLES:
        versions = tracking.find_versions(role, {"scenario_hash": cfg.hash, "role": role})
        if not versions:
            return None
        found[role] = versions[0]
    scenario_run_id = str(found["poisoned"].tags["scenario_run_id"])
    poisoning = Poisoning.from_bytes(tracking.download_bytes(scenario_run_id, POISONING_ARTIFACT))
    scenario = build_scenario(cfg, ctx, poisoning=poisoning)
    models, metrics, refs = {}, {}, {}
    for role, mv in found.items():
        ref = tracking.VersionRef.of(mv)
        spec, state = tracking.load_weights(ref.run_id)
        models[role] = load_model(spec, state).to(ctx.device).eval()
        metrics[role] = tracking.run_metrics(ref.run_id)
        refs[role] = ref
    return References(scenario, models, metrics, refs, scenario_run_id, reused=True)


def create_references(cfg: ScenarioConfig, ctx: RunContext) -> References:
    """Build the scenario, train and evaluate both references, log them under the active run and register them."""
    scenario_run_id = tracking.active_run_id()
    scenario = build_scenario(cfg, ctx)
    tracking.log_bytes(scenario.poisoning.to_bytes(), POISONING_ARTIFACT)
    tracking.log_text(
        "\n".join(str(int(i)) for i in scenario.poisoning.indices), "poisoning/poison_indices.txt"
    )
    tracking.log_metrics({"n_poison": scenario.poisoning.n_poison, "n_train": len(scenario.data.x_train)})
    models = train_references(scenario, ctx)
    metrics, refs = {}, {}
    lineage = {"scenario_hash": cfg.hash, "scenario_run_id": scenario_run_id}
    for role, model in models.items():
        with tracking.run(role, tags={**lineage, "role": role}, nested=True):
            tracking.log_params(cfg.to_flat())
            m = evaluate(model, scenario, ctx)
            x_train = scenario.corrupted[0] if role == "poisoned" else scenario.retain[0]
            m["n_train"] = float(len(x_train))
            m["train_compute"] = scenario.config.train.epochs * float(len(x_train))
            tracking.log_metrics(m)
            mv = tracking.log_model(model, scenario.spec, role, tags={**lineage, "role": role,
                                                                      **_str(cfg.to_flat())},
                                    input_example=scenario.data.x_test[:2])
            metrics[role], refs[role] = m, tracking.VersionRef.of(mv)
        key = scenario.attack.removal_metric
        log.info("%s: test_acc %.3f %s %.3g (registered %s v%s)", role, m["test_acc"], key, m.get(key, float("nan")),
                 refs[role].name, refs[role].version)
    return References(scenario, models, metrics, refs, scenario_run_id, reused=False)


def ensure_references(cfg: ScenarioConfig, ctx: RunContext) -> References:
    """Reuse the registered references of this scenario if they exist, else create them (needs an active run)."""
    refs = find_references(cfg, ctx)
    if refs is not None:
        log.info("scenario %s: reusing registered references (%s); nothing trained", cfg.hash,
                 ", ".join(f"{r.name} v{r.version}" for r in refs.versions.values()))
        return refs
    log.info("scenario %s: no registered references; training poisoned and retrained models", cfg.hash)
    return create_references(cfg, ctx)


def _str(d: dict[str, object]) -> dict[str, str]:
    return {f"scenario.{k}": str(v) for k, v in d.items()}
