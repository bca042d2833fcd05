"""The ``tune`` job: an Optuna study per method and scenario, logged to MLflow as a parent run with trial children.

Joins the pure search (`search`) with tracking (`tracking`); neither the methods nor the search know about MLflow.
"""

from __future__ import annotations

import json
import logging
import math
import textwrap
import time
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState
from torch import nn

from . import plots, report, tracking, verdict
from .context import RunContext
from .methods import METHODS
from .scenario import ScenarioConfig
from .search import (
    TuneConfig,
    best_trial,
    feasible_trials,
    is_feasible,
    make_objective,
    objective_history,
    open_study,
    pareto_trials,
    split_params,
)
from .store import References, ensure_references
from .unlearning import Discovery, Yardstick, unlearn
from .workers import is_dead, worker_id

log = logging.getLogger(__name__)

def summary_keys(removal_metric: str) -> tuple[str, ...]:
    """Columns of the printed summary: the attack's own metric in place of a fixed one."""
    return ("objective", "removal", "test_acc", removal_metric, "budget_used", "removal_pvalue",
            "equivalence_pvalue")


#: How a trial's run name marks a state other than complete (charts show run names on hover).
STATE_SUFFIX = {"complete": "", "infeasible": " (utility lost)", "pruned": " (pruned)", "failed": " (failed)"}


def trial_run(method: str, study: str, number: int, state: str, reason: str = "", seed: int | None = None,
              **extra: str) -> tuple[str, dict[str, str]]:
    """A trial run's name (method first, then the scenario seed: ``scrub / seed 0 / trial 3``, with its state when
    not complete; a comparison has one study per method and seed, so trial numbers repeat across seeds) and tags."""
    tags = {tracking.KIND: "trial", "method": method, "study": study, "trial": str(number), "state": state, **extra}
    if seed is not None:
        tags["seed"] = str(seed)
    if reason:
        tags["reason"] = reason[:500]
    where = "" if seed is None else f" / seed {seed}"
    return f"{method}{where} / trial {number}{STATE_SUFFIX.get(state, f' ({state})')}", tags


def trial_metrics(metrics: dict[str, float], state: str) -> dict[str, float]:
    """What a trial run logs: its metrics (a pruned trial's, the removal it had reached) and ``feasible`` (1: it
    counts towards the best case; 0: utility lost, pruned or failed), so charts can tell the two apart."""
    return {**metrics, "feasible": float(state == "complete")}


class MlflowTrialReporter:
    """Each trial is a run in the trials experiment, linked to the study's tune run, with its state as a tag."""

    def __init__(self, method: str, study_name: str, n_planned: int, writer: tracking.ChildRunWriter,
                 seed: int | None = None) -> None:
        self.method, self.study_name, self.n_planned, self.done, self.writer = (method, study_name, n_planned, 0,
                                                                                writer)
        self.seed = seed
        self.best: tuple[float, int] | None = None  # (objective, trial number)
        self.t0 = time.perf_counter()

    def started(self, trial: optuna.Trial, params: dict[str, Any]) -> None:
        self.params = params
        self.t_trial = time.perf_counter()
        self.start_ms = int(time.time() * 1000)

    def finished(self, trial: optuna.Trial, state: str, metrics: dict[str, float], reason: str) -> None:
        name, tags = trial_run(self.method, self.study_name, trial.number, state, reason, self.seed)
        self.writer.submit(name, self.start_ms, self.params, trial_metrics(metrics, state), tags,
                           failed=state == "failed")
        self.done += 1
        close = metrics.get("objective", float("nan"))
        if state == "complete" and math.isfinite(close) and (self.best is None or close > self.best[0]):
            self.best = (close, trial.number)
        best = f"closest {self.best[0]:.3f} (trial {self.best[1]})" if self.best else "no feasible trial yet"
        what = (f"removal (selection part) {metrics.get('removal_select', float('nan')):.3f}, closeness "
                f"{close:.3f} at budget {metrics.get('budget_used', float('nan')):.3f}") if metrics else reason
        log.info("[%d/%d] trial %d %s: %s | %s | %.1fs", self.done, self.n_planned, trial.number, state, what, best,
                 time.perf_counter() - self.t_trial)


def run_tune(
    tc: TuneConfig,
    cfg: ScenarioConfig,
    ctx: RunContext,
    experiment: str | None,
    nested: bool = False,
    top_up: bool = False,
) -> dict[str, Any]:
    """Run (or continue) the study and log it. ``top_up``: only run what the study lacks to reach ``n_trials``
    finished trials (how `compare` reuses finished studies); otherwise add ``n_trials`` more. ``nested``: log
    under the active run (compare's) instead of configuring tracking and starting a top-level run."""
    method = METHODS.get(tc.method)
    study_name = tc.name_for(cfg.hash)
    study = open_study(tc, cfg.hash)  # first: a study of another scenario or seed is refused before any run exists
    if not nested:
        tracking.configure(experiment)
    tags = {"entry_point": "tune", tracking.KIND: "tune", "method": tc.method, "scenario_hash": cfg.hash,
            "study": study_name, "worker": worker_id()}
    # method first, short: a comparison has one tune run per method and seed
    with tracking.run(f"{tc.method} / seed {cfg.seed}" if nested else tc.method, tags=tags, nested=nested):
        tracking.log_params({**cfg.to_flat(), "method": tc.method, "n_trials": tc.n_trials, "timeout": tc.timeout,
                             "stop": tc.stop, "min_trials": tc.min_trials, "patience": tc.patience,
                             "sampler": tc.sampler,
                             "budget_max": tc.budget_max, "sampler.seed": tc.seed, "mode": tc.mode,
                             "utility_tolerance": tc.utility_tolerance,
                             "discovered_fraction": tc.discovered_fraction, "select_fraction": tc.select_fraction,
                             "equivalence_margin": tc.equivalence_margin})
        tracking.set_tags({"storage": tracking.redact_uri(tc.storage)})
        refs = ensure_references(cfg, ctx)
        sc = refs.scenario
        yard = Yardstick.of_models(sc, refs.models, ctx, tc.select_fraction, tc.equivalence_margin)
        tracking.log_text(json.dumps({"select_fraction": tc.select_fraction, "seed": cfg.seed,
                                      "selection_units": np.flatnonzero(yard.select).tolist(),
                                      "verdict_units": yard.verdict_units.tolist()}), "verdict_split.json")
        discovery = discovery_of(tc, refs, yard, ctx)
        parts = yard.references(sc.attack, refs.metrics)
        for role in ("poisoned", "retrain"):
            tracking.log_metrics(parts[role], prefix=f"{role}.")
        # trials that ran to an outcome; a failed trial (a crash, a killed or interrupted worker) is run again
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        rule = tc.rule
        if tc.stop == "settled":  # n_trials caps the study's finished trials; a settled study runs no more
            settled = rule.settled_at(objective_history(study.get_trials(deepcopy=False))) is not None
            n_run = 0 if settled else max(tc.n_trials - len(finished), 0)
        else:
            n_run = max(tc.n_trials - len(finished), 0) if top_up else tc.n_trials
        too_weak = bool(parts["poisoned"]["attack_too_weak"])
        if too_weak:
            # Removal is a ratio to the poisoned model's residue: noise when that residue is not detected.
            log.warning("%s: the poisoned model's residue is not detected on the verdict part (one-sided p = %.3g >= "
                        "%g): nothing to judge, no trials run", verdict.TOO_WEAK,
                        sc.attack.poison_pvalue(yard.poisoned[~yard.select], yard.retrain[~yard.select]),
                        verdict.WEAK_LEVEL)
            tracking.set_tags({"attack_effect": "too weak to judge", "verdict": verdict.TOO_WEAK})
            n_run = 0
        tracking.set_tags({"reused_trials": str(len(finished)), "new_trials": str(n_run)})
        writer = tracking.ChildRunWriter(experiment_id=tracking.trials_experiment_id())
        if study.get_trials(deepcopy=False):
            reconcile(study, writer, tc.method, seed=cfg.seed)
        reporter = MlflowTrialReporter(tc.method, study_name, n_run, writer, cfg.seed)
        objective = make_objective(tc, method, sc, refs.models["poisoned"], refs.metrics, yard, ctx,
                                   reporter, discovery)
        if n_run and tc.warm_start and not study.get_trials(deepcopy=False):
            # a new study first tries the best settings other seeds of the method found (compare's warm start):
            # settings only, never another scenario's poisons or scores
            for params in tc.warm_start:
                study.enqueue_trial(dict(params), skip_if_exists=True)
            tracking.set_tags({"warm_start": str(len(tc.warm_start))})
            log.info("study %s: warm start, %d settings from the method's other seeds enqueued first", study_name,
                     len(tc.warm_start))
        log.info("study %s: %d trials so far; running %d more (storage %s)", study_name, len(finished), n_run,
                 tracking.redact_uri(tc.storage))
        try:
            if n_run:
                stop = ([rule.callback(lambda st: objective_history(st.get_trials(deepcopy=False)))]
                        if tc.stop == "settled" else None)
                study.optimize(objective, n_trials=n_run, timeout=tc.timeout or None, catch=(Exception,),
                               callbacks=stop)
        except BaseException:  # interrupted (Optuna has failed the trial): give that trial its child run too
            writer.flush()  # the trials this process finished have their child runs queued: let them land first
            reconcile(study, writer, tc.method, interrupted=True, seed=cfg.seed)
            raise
        finally:
            writer.close()
        # A topped-up study that needed no new trial is reused as it is: no new plots, no new model version.
        summary = summarise(study, tc, refs, yard, parts, ctx, artifacts=not (top_up and n_run == 0),
                            dashboard=not nested, discovery=discovery)
        summary.update({"new_trials": n_run, "references": parts, "too_weak": too_weak})
        if not nested:
            print(f"results: {tracking.run_url()}{tracking.serve_hint()}")
    return summary


def summarise(
    study: optuna.Study,
    tc: TuneConfig,
    refs: References,
    yard: Yardstick,
    parts: dict[str, dict[str, float]],
    ctx: RunContext,
    artifacts: bool = True,
    dashboard: bool = True,
    discovery: Discovery | None = None,
) -> dict[str, Any]:
    """Everything the parent run shows: counts, best trial, verdict, plots, trials table, registered best model
    (plots, table and model only with ``artifacts``; the interactive page ``plots/dashboard.html`` only with
    ``dashboard`` too)."""
    trials = study.get_trials(deepcopy=False)
    states: dict[str, float] = {}
    for t in trials:
        s = t.state.name.lower()
        if t.state == optuna.trial.TrialState.COMPLETE and not is_feasible(t):
            s = "infeasible"
        states[s] = states.get(s, 0) + 1
    tracking.log_metrics({f"n_trials_{k}": v for k, v in states.items()} | {"n_trials_total": len(trials)})
    best = best_trial(study)
    sc = refs.scenario
    key = sc.attack.removal_metric
    result: dict[str, Any] = {"study": study.study_name, "states": states, "best": None,
                              "feasible": [dict(t.user_attrs["metrics"]) for t in feasible_trials(study)],
                              "history": objective_history(trials)}
    state, reason = tc.rule.describe(result["history"], tc.n_trials)
    # stop=settled: "still improving" is the rule's verdict (capped, or stopped early by a timeout); stop=fixed:
    # the best trial in the last 20% of the trials
    still = state in ("capped", "running") if tc.stop == "settled" else report.still_improving(result["history"])
    result.update({"search_state": state, "search_reason": reason, "search_trials": len(result["history"])})
    tracking.set_tags({"search_still_improving": str(still).lower(), "search_stop": state,
                       "search_stop_reason": reason})
    log.info("study %s: %s", study.study_name, reason)
    best_model: nn.Module | None = None
    if artifacts:
        _log_trials_table(trials, key)
        # Trials log no models: the best one is re-created once (seeded, so identical) for plots and registry.
        best_model = _rerun(best, tc, refs, yard, ctx, discovery) if best is not None else None
        _plots(study, tc, refs, yard, best, best_model, ctx)
        if dashboard:
            tracking.log_dashboard(f"tune {tc.method}: study {study.study_name}")
        else:  # a study of a comparison: PNGs only (the comparison has the page; 5 MB per study would add up)
            tracking.forget_dashboard()
    if best is None:
        verdict = (f"no trial kept utility (test accuracy within {tc.utility_tolerance} of the poisoned model's); "
                   "no best-case removal to report")
        tracking.set_tags({"verdict": verdict})
        print(verdict)
        return result
    bm = best.user_attrs["metrics"]
    tracking.log_metrics(bm)  # the tune run's metrics are its best trial's, under the same names as everywhere
    tracking.log_params({f"best.{k}": v for k, v in best.params.items()})
    answer = report.answer_of(bm)
    verdict = (f"{answer}: {report.answer_reason(bm, answer, tc.equivalence_margin)}. Best case: trial {best.number}"
               f" (closest to retraining on the selection part), removal {bm['removal']:.3f} on the verdict part "
               f"({int(bm.get('verdict_units', 0))} units; 1.0 = retraining) at budget {bm['budget_used']:.3f}; "
               f"{sc.attack.residual_test}: p = {bm['removal_pvalue']:.3g}; {key}: poisoned "
               f"{parts['poisoned'][key]:.3g}, best {bm[key]:.3g}, retrain {parts['retrain'][key]:.3g}")
    if tc.stop == "settled":
        verdict += f"; search {reason}"
    elif still:
        verdict += (f"; the search was still improving (best trial in the last {report.IMPROVING_TAIL:.0%} of the "
                    "trials): run more trials")
    # the tag short enough for MLflow's tag chips; the whole sentence, wrapped, in verdict.txt and the description
    short = (f"{answer}; removal {bm['removal']:.3f} at budget {bm['budget_used']:.3f}"
             f"{'; still improving' if still else ''}")
    tracking.set_tags({"verdict": short, "best_trial": str(best.number)})
    tracking.log_text(textwrap.fill(verdict, width=100, break_on_hyphens=False) + "\n", "verdict.txt")
    tracking.set_description(
        f"**{tc.method}**: {verdict}\n\nBest trial's hyperparameters: "
        + ", ".join(f"`{k}` = {v:.4g}" if isinstance(v, float) else f"`{k}` = {v}" for k, v in best.params.items())
        + f".\n\nTrials: experiment *{tracking.experiment_name()}{tracking.TRIALS_SUFFIX}*, search "
        f"`tags.study = '{study.study_name}'`.")
    if tc.mode == "pareto":
        front = [{"trial": t.number, **{k: t.user_attrs["metrics"][k] for k in ("objective", "removal",
                                                                                 "budget_used")}}
                 for t in pareto_trials(study)]
        tracking.log_text(json.dumps(front, indent=1), "pareto_front.json")
        result["pareto"] = front
    result.update({"best": best.number, "best_metrics": bm, "verdict": verdict, "best_params": dict(best.params)})
    if not artifacts:
        return result
    model = best_model
    assert model is not None
    result["registered"] = _register_best(model, study, best, tc, refs)
    _print_summary(study, parts, best, key)
    print(verdict)
    return result


def _register_best(model: nn.Module, study: optuna.Study, best: Any, tc: TuneConfig, refs: References) -> str:
    """Register the best trial's model once per (study, trial), with the scenario's alias ``best-<hash[:8]>``
    (`tracking.scenario_alias`; only for a study of the default kind, `TuneConfig.default_kind`). The
    plain ``best`` and ``seed<n>`` aliases are `compare`'s: the version its verdict is about.

    Several workers of one study finish together and may each register the same best trial. A version that already
    exists is reused; two that raced past that check are resolved after the fact: the lowest version number stays,
    the others are deleted (each worker deletes its own), so one version per best trial remains.
    """
    role, sc = tracking.unlearned_role(tc.method), refs.scenario
    key = {"study": study.study_name, "trial": str(best.number)}
    existing = tracking.find_versions(role, key)
    if not existing:
        bm = best.user_attrs["metrics"]
        description = report.describe_unlearned(
            tc.method, bm, refs.metrics, refs.versions, sc.attack.removal_metric,
            f"seed {sc.config.seed}, best feasible trial {best.number} of study {study.study_name}",
            sc.attack.residual_test)
        mv = tracking.log_model(model, sc.spec, role, input_example=sc.data.x_test[:2], name=tc.method,
                                params=best.params, metrics=bm, description=description, tokenizer=sc.data.tokenizer,
                                tags={**key, "scenario_hash": sc.config.hash, "method": tc.method,
                                      **({"discovered_fraction": f"{tc.discovered_fraction:g}"}
                                         if tc.discovered_fraction < 1 else {}),
                                      **tracking.reference_tags(refs.versions),
                                      **{f"param.{k}": str(v) for k, v in best.params.items()}})
        existing = tracking.find_versions(role, key)
        if min(int(v.version) for v in existing) != int(mv.version):  # another worker registered it first
            tracking.delete_version(role, str(mv.version))
            existing = [v for v in existing if v.version != mv.version]
    keep = min(existing, key=lambda v: int(v.version))
    if tc.default_kind:  # the scenario's default study: its tuned best
        tracking.set_alias(role, tracking.scenario_alias(sc.config.hash), str(keep.version))
    return f"{keep.name}/{keep.version}"


def reconcile(study: optuna.Study, writer: tracking.ChildRunWriter, method: str, interrupted: bool = False,
              seed: int | None = None) -> None:
    """Make the study's MLflow record whole again after a worker died or was interrupted.

    A killed worker leaves its tune run RUNNING, may leave a trial RUNNING, and may lose child runs still queued in
    its background writer. Here (the active run being this worker's tune run):
    - every RUNNING run of the study whose worker is known dead (`workers.is_dead`), and each RUNNING child of
      those, is ended KILLED with the reason as tag ``error``;
    - a trial is *orphaned* if its worker is dead or is this process, or if it never recorded its worker (killed or
      interrupted within moments of starting) while no other live worker runs the study; a RUNNING orphan is
      failed, and every finished orphan without a child run gets one, tagged ``reconciled=true`` (a live worker's
      trials are left to that worker's own writer).
    Called when a study with trials is resumed, and after an interrupt (``interrupted``: for this process's own
    trial, reported quietly since the interrupt itself is reported).
    """
    name, me, mine = study.study_name, tracking.active_run_id(), worker_id()
    runs = tracking.search_runs(f"tags.study = '{name}'", [tracking.active_experiment_id(), writer.experiment_id])
    running = {r.info.run_id: r.data.tags.get("worker", "") for r in runs if r.info.status == "RUNNING"
               and "trial" not in r.data.tags and r.info.run_id != me}
    dead = {run_id: worker for run_id, worker in running.items() if is_dead(worker)}
    for r in runs:
        parent = r.data.tags.get("mlflow.parentRunId") or r.data.tags.get("tune_run", "")
        if r.info.run_id in dead or (r.info.status == "RUNNING" and parent in dead):
            worker = dead.get(r.info.run_id) or dead[parent]
            tracking.end_run_as(r.info.run_id, "KILLED", f"worker {worker} died; found when run {me} resumed study "
                                f"{name}")
            log.warning("study %s: run %s of dead worker %s marked KILLED", name, r.info.run_id, worker)
    others_live = len(running) > len(dead)

    def orphaned(owner: str) -> bool:
        return owner == mine or (bool(owner) and is_dead(owner)) or (not owner and not others_live)

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = str(t.user_attrs.get("worker", ""))
        if orphaned(owner):
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            if interrupted:  # this process's own trial, interrupted while it started: the CLI says it in one line
                log.info("study %s: interrupted trial %d marked failed", name, t.number)
            else:
                log.warning("study %s: trial %d was left running by a worker that is gone: marked failed", name,
                            t.number)
    have = {int(r.data.tags["trial"]) for r in runs if r.data.tags.get("trial", "").isdigit()}
    for t in study.get_trials(deepcopy=False):
        owner = str(t.user_attrs.get("worker", ""))
        if not t.state.is_finished() or t.number in have or not orphaned(owner):
            continue
        state = t.state.name.lower()
        if t.state == TrialState.COMPLETE and not is_feasible(t):
            state = "infeasible"
        reason = str(t.user_attrs.get("reason", ""))
        if t.state == TrialState.FAIL and not reason:
            reason = "interrupted" if owner == mine else f"worker {owner or '(unrecorded)'} died"
        state = "failed" if state == "fail" else state
        run_name, tags = trial_run(method, name, t.number, state, reason, seed, reconciled="true")
        start = int(t.datetime_start.timestamp() * 1000) if t.datetime_start else int(time.time() * 1000)
        writer.submit(run_name, start, t.params, trial_metrics(dict(t.user_attrs.get("metrics", {})), state), tags,
                      failed=t.state == TrialState.FAIL)


def discovery_of(tc: TuneConfig, refs: References, yard: Yardstick, ctx: RunContext) -> Discovery | None:
    """Partial discovery's subset and the references' evidence on each part (None at fraction 1, the paper's)."""
    if tc.discovered_fraction >= 1:
        return None
    return Discovery.of(refs.scenario, tc.discovered_fraction, yard.poisoned, yard.retrain, ctx)


def _rerun(best: Any, tc: TuneConfig, refs: References, yard: Yardstick, ctx: RunContext,
           discovery: Discovery | None = None) -> nn.Module:
    """Rebuild the best trial's model by re-running it (deterministic under the same seed); trials log no models."""
    method = METHODS.get(tc.method)
    assert method.search_space is not None
    fixed = optuna.trial.FixedTrial(best.params)
    if "max_k" in best.user_attrs:  # depth-dependent spaces (EU-k, CF-k) read it: k's range as the trial had it
        fixed.set_user_attr("max_k", best.user_attrs["max_k"])
    kwargs = method.search_space(fixed)
    _, budget = split_params(best.params)
    out = unlearn(method, method.config(**kwargs), budget, refs.scenario, refs.models["poisoned"], refs.metrics,
                  yard, ctx, utility_tolerance=tc.utility_tolerance, discovery=discovery)
    return out.model


def _log_trials_table(trials: list[optuna.trial.FrozenTrial], attack_metric: str) -> None:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    keys = ("objective", "removal_select", "removal", "test_acc", "budget_used", attack_metric, "mia_tpr_at_1fpr")
    w.writerow(["trial", "state", "feasible", *keys, "params", "reason"])
    for t in trials:
        m = t.user_attrs.get("metrics", {})
        w.writerow([t.number, t.state.name.lower(), is_feasible(t), *(report.num(m[k]) if k in m else "" for k in keys),
                    json.dumps(t.params), t.user_attrs.get("reason", "")])
    tracking.log_text(buf.getvalue(), "trials.csv")


def _plots(study: optuna.Study, tc: TuneConfig, refs: References, yard: Yardstick, best: Any,
           best_model: nn.Module | None,
           ctx: RunContext) -> None:
    trials = [t for t in study.get_trials(deepcopy=False) if "metrics" in t.user_attrs]
    if trials:
        ms = [t.user_attrs["metrics"] for t in trials]
        feasible = [is_feasible(t) for t in trials]
        tracking.log_figures("removal_vs_compute", plots.removal_vs_compute(
            [m["budget_used"] for m in ms], [m.get("removal_select", float("nan")) for m in ms], feasible,
            [f"trial {t.number}" for t in trials], f"{tc.method}: what the search saw, against compute",
            ylabel="removal on the selection part (the search aims at 1)"))
    values = objective_history(study.get_trials(deepcopy=False))
    tracking.log_figures("optimization_history", plots.history(
        values, f"{tc.method}: closeness to retraining per trial (selection part)"))
    try:
        imp = optuna.importance.get_param_importances(
            study, target=lambda t: t.values[0], evaluator=optuna.importance.FanovaImportanceEvaluator(seed=tc.seed))
        if imp:
            tracking.log_figures("param_importances", plots.importances(
                list(imp), list(imp.values()), f"{tc.method}: what matters for closeness to retraining"))
    except (RuntimeError, ValueError) as e:  # too few completed trials, or no parameter varied
        log.info("no parameter importances: %s", e)
    sc = refs.scenario
    if sc.attack.name != "gaussian":  # the I_z plot is GUS's; other attacks' scores are success indicators
        return
    v = ~yard.select
    series = {"poisoned": yard.poisoned[v]}
    if best is not None and best_model is not None:
        series[f"best {tc.method} (trial {best.number})"] = sc.attack.scores(
            best_model, sc.data, sc.poisoning, ctx)[v]
    series["retrain"] = yard.retrain[v]
    tracking.log_figures("iz_distributions", plots.iz_distributions(series, "GUS statistic per poison (verdict part)"))


def _print_summary(study: optuna.Study, parts: dict[str, dict[str, float]], best: Any, key: str) -> None:
    keys = summary_keys(key)
    done = [t for t in study.get_trials(deepcopy=False) if "metrics" in t.user_attrs]
    done.sort(key=lambda t: -t.user_attrs["metrics"].get("objective", -math.inf))
    print(f"{'':<18}" + "".join(f"{k:>19}" for k in keys))
    for role in ("poisoned", "retrain"):
        m = parts[role]
        print(f"{role:<18}" + "".join(f"{m[k]:>19.4g}" if k in m else f"{'-':>19}" for k in keys))
    for t in done[:5]:
        m = t.user_attrs["metrics"]
        flag = "*" if t.number == best.number else " " if is_feasible(t) else "x"
        print(f"{flag} trial {t.number:<10}" + "".join(f"{m[k]:>19.4g}" if k in m else f"{'-':>19}"
                                                          for k in keys))
    print("(* best feasible trial, closest to retraining on the selection part; x utility lost; removal and the "
          "p-values on the verdict part)")
