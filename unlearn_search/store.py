"""Scenario references in MLflow: find them in the Model Registry by scenario hash, or build and register them.

This is the one place that joins the pure scenario code with the tracking layer. A scenario is identified by the
hash of its parameters (`ScenarioConfig.hash`); its reference versions carry the tag ``scenario_hash`` so that a
second run with the same parameters trains nothing.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from . import tracking
from .attacks import Poisoning
from .context import RunContext
from .models import load_model
from .scenario import Scenario, ScenarioConfig, build_scenario, evaluate, train_references
from .workers import is_dead, worker_id

log = logging.getLogger(__name__)

ROLES = ("poisoned", "retrain")
POISONING_ARTIFACT = "poisoning/poisoning.npz"
#: Tag by which a run claims the building of a scenario (see `ensure_references`).
CLAIM_TAG = "scenario_claim"


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
    # both references of one scenario run (a run that failed half-way registered only one, or none: see
    # create_references), the newest such pair
    by_run: dict[str, dict[str, tracking.ModelVersion]] = {}
    for role in ROLES:
        for mv in tracking.find_versions(role, {"scenario_hash": cfg.hash, "role": role}):
            by_run.setdefault(str(mv.tags.get("scenario_run_id", "")), {}).setdefault(role, mv)
    pairs = [p for p in by_run.values() if len(p) == len(ROLES)]
    if not pairs:
        return None
    found = max(pairs, key=lambda p: int(p["poisoned"].version))
    scenario_run_id = str(found["poisoned"].tags["scenario_run_id"])
    poisoning = _cached(("poisoning", scenario_run_id), lambda: Poisoning.from_bytes(
        tracking.download_bytes(scenario_run_id, POISONING_ARTIFACT)))
    scenario = build_scenario(cfg, ctx, poisoning=poisoning)
    models, metrics, refs = {}, {}, {}
    for role, mv in found.items():
        ref = tracking.VersionRef.of(mv)
        spec, state = _cached(("weights", ref.run_id), functools.partial(tracking.load_weights, ref.run_id))
        models[role] = load_model(spec, state).to(ctx.device).eval()
        metrics[role] = dict(_cached(("metrics", ref.run_id), functools.partial(tracking.run_metrics, ref.run_id)))
        refs[role] = ref
    return References(scenario, models, metrics, refs, scenario_run_id, reused=True)


#: What `find_references` downloaded, by (tracking URI, kind, run id): a finished run's artifacts and metrics never
#: change, so `compare`, which opens the same scenario once per method, downloads and unpickles each only once
#: (the registry is still asked for the current versions every time). Bounded: the most recent entries only.
_CACHE: OrderedDict[tuple[str, str, str], Any] = OrderedDict()
_CACHE_SIZE = 32


def _cached(key: tuple[str, str], load: Callable[[], Any]) -> Any:
    full = (tracking.tracking_uri(), *key)
    if full in _CACHE:
        _CACHE.move_to_end(full)
        return _CACHE[full]
    value = _CACHE[full] = load()
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return value


def create_references(cfg: ScenarioConfig, ctx: RunContext, own_run: bool = False) -> References:
    """Build the scenario, train and evaluate both references, log them and register them.

    A scenario's poisons and reference runs live in a run of their own: the active run when it is the scenario's
    own (``own_run``: the `poison` entry point's), else a nested ``scenario-<hash>`` run. (`compare` builds one
    scenario per seed under one run; logged there directly, each seed's poisons overwrote the previous seed's, and
    a later reuse of seed 0 would have scored it against seed 2's noise.)"""
    if own_run:
        return _create_references(cfg, ctx)
    with tracking.run(f"scenario-{cfg.hash[:8]}", tags={"entry_point": "scenario", "scenario_hash": cfg.hash},
                      nested=True):
        tracking.log_params(cfg.to_flat())
        return _create_references(cfg, ctx)


def _create_references(cfg: ScenarioConfig, ctx: RunContext) -> References:
    scenario_run_id = tracking.active_run_id()
    scenario = build_scenario(cfg, ctx)
    tracking.log_bytes(scenario.poisoning.to_bytes(), POISONING_ARTIFACT)
    _cached(("poisoning", scenario_run_id), lambda: scenario.poisoning)
    tracking.log_text(
        "\n".join(str(int(i)) for i in scenario.poisoning.indices), "poisoning/poison_indices.txt"
    )
    tracking.log_metrics({"n_poison": scenario.poisoning.n_poison, "n_train": len(scenario.data.x_train)})
    models = train_references(scenario, ctx)
    metrics: dict[str, dict[str, float]] = {}
    refs: dict[str, tracking.VersionRef] = {}
    lineage = {"scenario_hash": cfg.hash, "scenario_run_id": scenario_run_id}
    try:
        _log_references(models, scenario, cfg, ctx, lineage, metrics, refs)
    except BaseException:
        # a half-registered scenario (the disk filled up while logging the retrained model, say) must not be found
        # later: remove what this run registered, as far as the store still takes writes
        for ref in refs.values():
            with contextlib.suppress(Exception):
                tracking.delete_version(ref.name.removeprefix(f"{tracking.REGISTRY_PREFIX}."), ref.version)
        raise
    return References(scenario, models, metrics, refs, scenario_run_id, reused=False)


def _log_references(models: dict[str, nn.Module], scenario: Scenario, cfg: ScenarioConfig, ctx: RunContext,
                    lineage: dict[str, str], metrics: dict[str, dict[str, float]],
                    refs: dict[str, tracking.VersionRef]) -> None:
    """Evaluate each reference and log it as a nested run; then, once both are fully written, register both (so a
    failure while logging, e.g. a full disk, registers nothing). Fills ``metrics`` and ``refs`` as it goes."""
    logged = {}
    for role, model in models.items():
        with tracking.run(role, tags={**lineage, "role": role}, nested=True):
            tracking.log_params(cfg.to_flat())
            m = evaluate(model, scenario, ctx)
            x_train = scenario.corrupted[0] if role == "poisoned" else scenario.retain[0]
            m["n_train"] = float(len(x_train))
            m["train_compute"] = scenario.config.train.epochs * float(len(x_train))
            tracking.log_metrics(m)
            tags = {**lineage, "role": role, **_str(cfg.to_flat())}
            logged[role] = (tracking.log_model_unregistered(model, scenario.spec, tags, name=role, metrics=m,
                                                            input_example=scenario.data.x_test[:2],
                                                            tokenizer=scenario.data.tokenizer), tags)
            metrics[role] = m
    for role, (uri, tags) in logged.items():
        refs[role] = tracking.VersionRef.of(tracking.register(uri, role, tags, description=_describe_reference(
            role, cfg, metrics[role], scenario.attack.removal_metric)))
        # what `find_references` would download again: the same bytes (weights-only state, exact round trip)
        state = {k: v.detach().cpu().clone() for k, v in models[role].state_dict().items()}
        _cached(("weights", refs[role].run_id), functools.partial(tuple, (scenario.spec, state)))
        key, m = scenario.attack.removal_metric, metrics[role]
        log.info("%s: test_acc %.3f %s %.3g (registered %s v%s)", role, m["test_acc"], key, m.get(key, float("nan")),
                 refs[role].name, refs[role].version)


def _describe_reference(role: str, cfg: ScenarioConfig, m: dict[str, float], key: str) -> str:
    """The registered version's description: what the model is, and its key numbers."""
    what = ("trained on the poisoned training set (clean data plus the poisons): the model to unlearn from"
            if role == "poisoned" else
            "retrained from scratch without the poisons: the gold standard every unlearned model is judged against")
    return (f"**{role}** reference of scenario `{cfg.hash}` ({cfg.attack} attack on {cfg.dataset}, model "
            f"{cfg.model}, seed {cfg.seed}): {what}.\n\n"
            f"test accuracy {m['test_acc']:.4g}; {key} {m.get(key, float('nan')):.4g}; "
            f"MIA TPR at 1% FPR {m.get('mia_tpr_at_1fpr', float('nan')):.4g}")


def ensure_references(cfg: ScenarioConfig, ctx: RunContext, poll_s: float = 2.0, own_run: bool = False) -> References:
    """Reuse the registered references of this scenario if they exist, else create them (needs an active run).

    Several processes may need the same new scenario at once (two `poison` commands, workers of one study). Only one
    builds it: each claims the scenario on its active run (tag ``scenario_claim`` = ``<hash>:<time ns>`` and
    ``worker``), then looks at every live claim on the same scenario in the experiment; the earliest claim builds,
    the others wait, polling the Model Registry every ``poll_s`` seconds, and reuse what it registered. A claim whose
    run ended, or whose worker is known dead (`workers.is_dead`), no longer counts, so a waiter takes over from a
    builder that failed or was killed. The claims live in the tracking store, so this works alike for a local store
    and for a tracking server shared by many machines (there, a builder killed on another host holds its claim until
    its run is ended, e.g. by a resumed study's clean-up; claims are ordered by each host's clock).
    """
    refs = find_references(cfg, ctx)
    if refs is None:
        claim = f"{cfg.hash}:{time.time_ns():020d}"
        tracking.set_tags({CLAIM_TAG: claim, "worker": worker_id()})
        try:
            while refs is None:
                if _first_live_claim(cfg.hash) == claim:
                    log.info("scenario %s: no registered references; training poisoned and retrained models",
                             cfg.hash)
                    return create_references(cfg, ctx, own_run=own_run)
                log.info("scenario %s is being built by another run; waiting for its references", cfg.hash)
                time.sleep(poll_s)
                refs = find_references(cfg, ctx)
        finally:
            tracking.delete_tag(CLAIM_TAG)
    log.info("scenario %s: reusing registered references (%s); nothing trained", cfg.hash,
             ", ".join(f"{r.name} v{r.version}" for r in refs.versions.values()))
    return refs


def _first_live_claim(scenario_hash: str) -> str | None:
    """The earliest claim on the scenario among RUNNING runs whose worker is not known dead."""
    runs = tracking.search_runs(f"tags.{CLAIM_TAG} LIKE '{scenario_hash}:%' and attributes.status = 'RUNNING'")
    live = [r.data.tags[CLAIM_TAG] for r in runs if not is_dead(r.data.tags.get("worker", ""))]
    return min(live, default=None)


def _str(d: dict[str, object]) -> dict[str, str]:
    return {f"scenario.{k}": str(v) for k, v in d.items()}
