"""The ``compare`` job: every method tuned at its best, side by side with no unlearning and retraining.

For each scenario seed and each method it runs or reuses the method's tune study (the same study names as `tune`,
topped up to ``n_trials`` finished trials, so finished studies are not redone) as a nested run, then tabulates the
best feasible trial per method, the best removal within each budget level, and plots them. Given several attacks
(one scenario each), it runs that comparison per attack as a nested run and tabulates the attacks side by side.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import plots, report, tracking, verdict
from .attacks import ATTACKS
from .context import RunContext
from .errors import UsageError, check_range
from .methods import METHODS
from .scenario import ScenarioConfig
from .search import TuneConfig, wait_for_trials
from .store import ensure_references
from .tune import run_tune

log = logging.getLogger(__name__)

#: The paper's eight methods (the default list); `none` and `retrain` are the table's reference rows.
PAPER_METHODS = ("gd", "ngd", "ga", "eu_k", "cf_k", "scrub", "neggrad_plus", "ssd")
#: Budget levels of the paper's figures (fractions of retraining compute).
DEFAULT_LEVELS = (0.02, 0.04, 0.06, 0.08, 0.10)


def parse_methods(text: str) -> list[str]:
    """``paper`` (or empty): the paper's eight; ``all``: every registered method, plugins included, except the
    reference rows; else a comma-separated list."""
    every = [m for m in METHODS.names() if m not in ("none", "retrain")]
    valid = f"paper, all or a comma-separated list of {', '.join(every)}"
    if not text or text == "paper":
        names = list(PAPER_METHODS)
    elif text == "all":
        names = every
    else:
        names = [m.strip() for m in text.split(",") if m.strip()]
    for n in names:
        if n in ("none", "retrain"):
            raise UsageError(f"method {n!r} is a reference row of every comparison; valid: {valid}")
        if n not in METHODS:
            raise UsageError(f"unknown method {n!r}; valid: {valid}")
    if not names:
        raise UsageError(f"no method given; valid: {valid}")
    return names


def parse_levels(text: str) -> list[float]:
    try:
        levels = sorted(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UsageError(f"budget_levels={text!r} is not a list of numbers; valid: e.g. 0.02,0.04,0.1") from None
    for lv in levels:
        check_range("budget level", lv, low=0, high=1, low_open=True)
    return levels


def parse_attacks(text: str, default: str) -> list[str]:
    """``same``: the scenario's own attack; ``all``: every registered attack; else a comma-separated list."""
    if not text or text == "same":
        return [default]
    names = ATTACKS.names() if text == "all" else [a.strip() for a in text.split(",") if a.strip()]
    for n in names:
        ATTACKS.get(n)
    if len(set(names)) != len(names):
        raise UsageError(f"attacks={text!r} names an attack twice; valid: distinct names of "
                         f"{', '.join(ATTACKS.names())}")
    return names


def run_compare(
    methods: list[str],
    base: ScenarioConfig,
    seeds: int,
    levels: list[float],
    tune_template: TuneConfig,
    ctx: RunContext,
    experiment: str | None,
    nested: bool = False,
    wait_s: float = 0.0,
    lira_shadows: int = 0,
    hypotheses: bool = False,
    ulira: bool = False,
) -> dict[str, Any]:
    """With ``tune_template.warm_start_seeds``, each seed's study of a method first tries the best settings of the
    method's earlier seeds (settings only: every seed stays its own scenario, judged on its own poisons). ``wait_s``:
    give workers already running `tune` on the shared storage up to this long per study to reach
    ``n_trials`` finished trials (`search.wait_for_trials`) before this process runs what is missing itself.
    ``lira_shadows`` > 0: also score every row with LiRA (`analysis.lira`; that many shadow models per seed, trained
    once per scenario and reused, `analyze.shadow_fits`), beside GUS and the loss MIA. ``hypotheses``: also test the
    paper's two hypotheses on every seed (`analyze.hypotheses`: one more training per seed, the clean control,
    registered and reused) and say in the headline what they found. ``ulira`` (with ``lira_shadows``): U-LiRA too,
    each method's shadows unlearned with its best setting (`analyze.ulira_rows`; at discovered fraction 1 only)."""
    check_range("seeds", seeds, low=1)
    if not nested:
        tracking.configure(experiment)
    tags = {"entry_point": "compare", tracking.KIND: "compare", "scenario_hash": base.hash, "attack": base.attack}
    told = tune_template.discovered_fraction
    if told < 1:
        tags["discovered_fraction"] = f"{told:g}"
    with tracking.run(f"compare {base.attack}" + (f", discovered {told:g}" if told < 1 else ""), tags=tags,
                      nested=nested):
        tracking.log_params({**base.to_flat(), "methods": ",".join(methods), "seeds": seeds,
                             "budget_levels": ",".join(f"{x:g}" for x in levels), "n_trials": tune_template.n_trials,
                             "budget_max": tune_template.budget_max,
                             "utility_tolerance": tune_template.utility_tolerance, "lira_shadows": lira_shadows,
                             "hypotheses": hypotheses, "discovered_fraction": told})
        found: list[tuple[dict[str, float], dict[str, float]]] = []
        per_seed: list[dict[str, dict[str, float] | None]] = []
        curves: dict[str, list[list[float]]] = {m: [] for m in methods}
        histories: dict[str, list[list[float]]] = {m: [] for m in methods}
        hashes = []
        seed_list = list(range(base.seed, base.seed + seeds))
        bests: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}  # warm start: each seed's best settings
        chosen: dict[str, list[tuple[int, str, float]]] = {m: [] for m in methods}  # (seed, hash, objective)
        for seed in seed_list:
            cfg = dataclasses.replace(base, seed=seed)
            hashes.append(cfg.hash)
            sctx = RunContext(seed=seed, device=ctx.device)
            refs = ensure_references(cfg, sctx)
            rows: dict[str, dict[str, float] | None] = {}
            references: dict[str, dict[str, float]] = {}
            for m in methods:
                log.info("seed %d: %s", seed, m)
                tc = dataclasses.replace(tune_template, method=m, seed=seed, study_name="",
                                         warm_start=tuple(bests[m]) if tune_template.warm_start_seeds else ())
                if wait_s > 0:
                    wait_for_trials(tc, cfg.hash, wait_s)
                summary = run_tune(tc, cfg, sctx, experiment, nested=True, top_up=True)
                references = summary["references"]  # on the verdict part, the same for every method of a seed
                best = summary.get("best_metrics")
                if summary.get("too_weak"):
                    best = {**references["poisoned"], "removal": float("nan"), "verdict_code": float("nan")}
                if summary.get("best_params") is not None:
                    bests[m].append(summary["best_params"])
                    chosen[m].append((seed, cfg.hash, float(summary["best_metrics"].get("objective", math.nan))))
                state = summary["search_state"]
                rows[m] = None if best is None else {
                    **best, "search_still_improving": float(state in ("capped", "running") if tc.stop == "settled"
                                                            else report.still_improving(summary["history"])),
                    "search_trials": float(summary["search_trials"]),
                    **({"search_settled": float(state == "settled"), "search_capped": float(state == "capped")}
                       if tc.stop == "settled" else {})}
                curves[m].append(report.best_at_levels(summary["feasible"], levels))
                histories[m].append(summary["history"])
            rows = {"no unlearning": {**references["poisoned"], "budget_used": 0.0}, **rows,
                    "retrain": {**references["retrain"], "budget_used": 1.0}}
            if lira_shadows:
                _add_lira(rows, refs, cfg, methods, lira_shadows, sctx, ulira, told)
            if hypotheses:
                from .analyze import control_models
                from .analyze import hypotheses as test_hypotheses

                h1, h2, _ = test_hypotheses(refs, control_models(refs, sctx), sctx)
                found.append((h1, h2))
                tracking.log_metrics({**h1, **h2}, prefix=f"seed{seed}.")
            per_seed.append(rows)
        tracking.set_tags({"scenario_hashes": ",".join(hashes)})
        if tune_template.default_kind:  # the aliases name the default kind's bests only (a sweep never moves them)
            _set_comparison_aliases(chosen)
        order = ["no unlearning", *methods, "retrain"]
        table = report.aggregate(per_seed, order, ATTACKS.get(base.attack).seed_combination)
        md = report.markdown(table, seeds)
        tracking.log_text(md, "comparison.md")
        tracking.log_text(report.csv(table), "comparison.csv")
        tracking.log_text(report.per_seed_csv(per_seed, seed_list, order), "comparison_per_seed.csv")
        _plots(table, curves, levels, histories)
        tracking.log_dashboard(f"compare {base.attack}: every figure")
        sentence = report.headline(table, seeds, base.attack, lira_shadows)
        if found:
            from .analyze import hypotheses_sentence

            sentence += " " + hypotheses_sentence(found)
        short = report.markdown(table, seeds, keys=("removal", "test_acc", ATTACKS.get(base.attack).removal_metric,
                                                    "mia_tpr_at_1fpr"))
        tracking.set_description(
            f"{sentence}\n\n{short}\nAll columns: `comparison.md`. Figures: `plots/removal_by_seed.png`, and every "
            "figure interactive in `plots/dashboard.html`. Each row is also a run (tag `kind` = `row`, "
            f"`compare_run` = this run's id) with the row's numbers under the metric names trials and tune runs use.")
        tracking.set_tags({"headline": sentence[:250]})
        _row_runs(table, base, name_suffix=f" ({base.attack})" if nested else "")
        url = tracking.run_url()
    print(f"{base.attack}:\n{md}\n{sentence}\nresults: {url}{tracking.serve_hint()}")
    return {"table": table, "curves": curves, "markdown": md, "headline": sentence, "url": url}


def _add_lira(rows: dict[str, dict[str, float] | None], refs: Any, cfg: ScenarioConfig, methods: list[str],
              n_shadows: int, ctx: RunContext, ulira: bool = False, discovered: float = 1.0) -> None:
    """LiRA's numbers into each row of one seed: the references', and each method's newest registered best model's
    (the one its study just registered); with ``ulira``, U-LiRA's for each method too (`analyze.ulira_rows`)."""
    from . import analysis
    from .analyze import best_models, shadow_fits, shadow_set, ulira_rows

    shadows = shadow_set(refs, n_shadows, ctx) if ulira else None
    fits = shadow_fits(refs, n_shadows, ctx, shadows)
    sc = refs.scenario
    models = {"no unlearning": refs.models["poisoned"], "retrain": refs.models["retrain"],
              **best_models(cfg, methods, ctx, discovered)}
    for name, model in models.items():
        row = rows.get(name)
        if row is not None:
            row.update(analysis.lira(model, sc, fits, ctx.device))
    if shadows is not None:
        for name, values in ulira_rows(refs, cfg, methods, shadows, ctx).items():
            row = rows.get(name)
            if row is not None:
                row.update(values)


def _set_comparison_aliases(chosen: dict[str, list[tuple[int, str, float]]]) -> None:
    """Each method's registry aliases for this comparison: ``seed<n>`` on each seed's tuned best (the version its
    scenario alias ``best-<hash[:8]>`` points at) and ``best`` on the one the verdict is about, the best over seeds by
    the search's objective (closeness to retraining on the selection part; the verdict part never chose it). The
    latest comparison of every poison told moves them; a discovery sweep never does."""
    for m, found in chosen.items():
        role = tracking.unlearned_role(m)
        versions = []
        for seed, scenario_hash, objective in found:
            mv = tracking.version_by_alias(role, tracking.scenario_alias(scenario_hash))
            if mv is None:
                continue
            tracking.set_alias(role, f"seed{seed}", str(mv.version))
            versions.append((objective, -seed, str(mv.version)))
        if versions:
            tracking.set_alias(role, "best", max(versions)[2])


#: Per-seed quantities that a mean over seeds would misrepresent; a row run logs the combined ones instead.
PER_SEED_ONLY = ("poison_removed", "removal_pvalue", "equivalence_pvalue", "verdict_code", "search_still_improving",
                 "search_settled", "search_capped", "gus_pvalue", "residual_z")


def _row_runs(table: list[report.Row], base: ScenarioConfig, name_suffix: str = "") -> None:
    """One run per table row (each method and both references), named by the row, tagged ``method``, ``kind=row``
    and ``compare_run`` (the comparison's run id), with the row's numbers under the plain metric names
    (``removal``, ``test_acc``, ``gus_z``, ...: means over seeds) plus its interval and verdict: one bar chart of
    ``removal`` in MLflow compares the methods.

    The rows are top-level runs, not nested under the comparison: MLflow's runs table collapses nested runs, and
    its charts plot only the runs the table shows, so nested rows were invisible until expanded (the tune runs,
    one per method and seed, stay nested under the comparison)."""
    for row in table:
        reference = row.name in report.REFERENCE_ROWS
        tags = {tracking.KIND: "row", "method": row.name, "row": "reference" if reference else "method",
                "scenario_hash": base.hash, "attack": base.attack, "verdict": report.verdict_cell(row),
                "search": report.search_cell(row)}
        seeds = float(row.n + row.missing)
        extra = {"removal_ci_low": row.ci[0], "removal_ci_high": row.ci[1], "removed_seeds": float(row.removed),
                 "seeds_removed_fraction": row.removed / seeds if seeds else math.nan, "seeds": seeds,
                 "combined_neg_log10_p": -math.log10(max(row.combined_pvalue, 1e-300)),
                 "search_still_improving_seeds": float(row.improving)}
        if row.answer is not None:  # the answer over seeds, as the table says it (Holm-adjusted)
            extra.update({"combined_poison_removed": float(row.answer == verdict.REMOVED),
                          "verdict_code": verdict.CODES[row.answer], "equivalence_pvalue": row.equivalence_pvalue,
                          "residual_pvalue_holm": row.residual_holm, "equivalence_pvalue_holm": row.equivalence_holm,
                          "needed_factor": row.needed})
        # per-seed answers and p-values are never averaged into a row's metrics: a mean of 0/1 answers or of
        # p-values reads as a verdict it is not (the combined test and the answer over seeds are `extra`)
        means = {k: v for k, v in row.mean.items() if k not in PER_SEED_ONLY}
        removal = row.mean.get("removal", math.nan)
        interval = "" if not all(math.isfinite(x) for x in row.ci) else f" [{row.ci[0]:.3g}, {row.ci[1]:.3g}]"
        description = (f"**{row.name}** ({base.attack} poisoning, {int(seeds)} seed(s)): "
                       + (f"{tags['verdict']}. Search: {tags['search']}. Mean removal {removal:.3g}{interval} (0 = no "
                          "unlearning, 1 = retraining), on the verdict part of the poisons." if not reference else
                          "a reference row of the comparison."))
        tracking.log_finished_run(row.name + name_suffix, tags,
                                  {k: v for k, v in {**means, **extra}.items() if math.isfinite(v)},
                                  link_tag="compare_run", description=description)


def parse_fractions(text: str) -> list[float]:
    """``discovered_fraction`` of `compare`: one value, or a comma-separated sweep (e.g. 0.1,0.5,1)."""
    from .unlearning import check_discovered_fraction

    try:
        values = sorted({float(x) for x in str(text).split(",") if x.strip()})
    except ValueError:
        raise UsageError(f"discovered_fraction={text!r} is not a list of numbers; valid: values in (0, 1], e.g. "
                         "0.1,0.5,1") from None
    if not values:
        raise UsageError(f"discovered_fraction={text!r} is empty; valid: values in (0, 1], e.g. 1 or 0.1,0.5,1")
    for v in values:
        check_discovered_fraction(v)
    return values


def run_compare_discovery(
    methods: list[str],
    base: ScenarioConfig,
    seeds: int,
    levels: list[float],
    tune_template: TuneConfig,
    ctx: RunContext,
    experiment: str | None,
    fractions: list[float],
    wait_s: float = 0.0,
    lira_shadows: int = 0,
    hypotheses: bool = False,
) -> dict[str, Any]:
    """Partial discovery swept (two fractions or more): `run_compare` at each discovered fraction as nested runs
    (each method's study per fraction is its own), then removal against the fraction per method, over all poisons
    and over the discovered and the undiscovered ones apart (a table and figures)."""
    tracking.configure(experiment)
    tags = {"entry_point": "compare_discovery", tracking.KIND: "compare_discovery", "scenario_hash": base.hash,
            "attack": base.attack}
    with tracking.run(f"compare {base.attack}, discovered {','.join(f'{f:g}' for f in fractions)}", tags=tags):
        tracking.log_params({**base.to_flat(), "methods": ",".join(methods), "seeds": seeds,
                             "n_trials": tune_template.n_trials, "budget_max": tune_template.budget_max,
                             "discovered_fraction": ",".join(f"{f:g}" for f in fractions)})
        tables = {}
        for f in fractions:
            log.info("discovered fraction %g", f)
            tables[f] = run_compare(methods, base, seeds, levels,
                                    dataclasses.replace(tune_template, discovered_fraction=f), ctx, experiment,
                                    nested=True, wait_s=wait_s, lira_shadows=lira_shadows,
                                    hypotheses=hypotheses)["table"]
        md = discovery_table(tables, methods)
        tracking.log_text(md, "comparison_discovery.md")
        for part, what in (("", "all poisons"), ("_discovered", "the discovered poisons"),
                           ("_undiscovered", "the undiscovered poisons")):
            curves: dict[str, tuple[Sequence[float], Sequence[float]]] = {
                m: ([_mean(tables[f], m, _part_key(f, part)) for f in fractions],
                    [_std(tables[f], m, _part_key(f, part)) for f in fractions]) for m in methods}
            tracking.log_figures(f"removal_by_discovery{part}", plots.removal_by_budget(
                fractions, curves, f"Best poison removal over {what}, against the fraction discovered",
                xlabel="poisons the method is told (% of all poisons)", retrain_label="retrain"))
        tracking.set_description(f"Partial discovery on `{base.attack}`, {seeds} seed(s): best removal per method "
                                 f"(mean over seeds) against the fraction of the poisons it is told.\n\n{md}")
        tracking.log_dashboard(f"compare {base.attack}: partial discovery")
        url = tracking.run_url()
    print(f"partial discovery:\n{md}\nresults: {url}{tracking.serve_hint()}")
    return {"tables": tables, "markdown": md}


def discovery_table(tables: dict[float, list[report.Row]], methods: list[str]) -> str:
    """Per method and discovered fraction: mean removal over all poisons, the discovered and the undiscovered ones
    (at fraction 1 the discovered ones are all of them), and test accuracy."""
    def cell(table: list[report.Row], m: str, key: str) -> str:
        v = _mean(table, m, key)
        return f"{v:.3f}" if math.isfinite(v) else "-"

    out = ("| method | discovered | removal (all poisons) | removal (discovered) | removal (undiscovered) | "
           "test acc |\n|---|---|---|---|---|---|\n")
    for m in methods:
        for f, t in tables.items():
            disc = cell(t, m, "removal_discovered" if f < 1 else "removal")
            undisc = cell(t, m, "removal_undiscovered") if f < 1 else "-"
            out += f"| {m} | {f:g} | {cell(t, m, 'removal')} | {disc} | {undisc} | {cell(t, m, 'test_acc')} |\n"
    return out


def _part_key(fraction: float, part: str) -> str:
    """The row metric of removal over a part of the poisons: at fraction 1 every poison is discovered (``removal``)
    and none undiscovered (a key no row has: NaN)."""
    if fraction < 1 or not part:
        return f"removal{part}"
    return "removal" if part == "_discovered" else "removal_undiscovered"


def _std(table: list[report.Row], name: str, key: str) -> float:
    return next((r.std.get(key, float("nan")) for r in table if r.name == name), float("nan"))


def run_compare_attacks(
    methods: list[str],
    bases: list[ScenarioConfig],
    seeds: int,
    levels: list[float],
    tune_template: TuneConfig,
    ctx: RunContext,
    experiment: str | None,
    wait_s: float = 0.0,
    lira_shadows: int = 0,
    hypotheses: bool = False,
    ulira: bool = False,
) -> dict[str, Any]:
    """`run_compare` for each scenario (one per attack) as nested runs, then the attacks side by side."""
    if len(bases) == 1:
        return run_compare(methods, bases[0], seeds, levels, tune_template, ctx, experiment, wait_s=wait_s,
                           lira_shadows=lira_shadows, hypotheses=hypotheses, ulira=ulira)
    tracking.configure(experiment)
    attacks = [b.attack for b in bases]
    with tracking.run(f"compare {', '.join(attacks)}", tags={"entry_point": "compare_attacks",
                                                               tracking.KIND: "compare_attacks"}):
        tracking.log_params({"attacks": ",".join(attacks), "methods": ",".join(methods), "seeds": seeds,
                             "n_trials": tune_template.n_trials, "budget_max": tune_template.budget_max,
                             **{k: v for k, v in bases[0].to_flat().items() if not k.startswith("attack")}})
        runs = {b.attack: run_compare(methods, b, seeds, levels, tune_template, ctx, experiment, nested=True,
                                      wait_s=wait_s, lira_shadows=lira_shadows, hypotheses=hypotheses,
                                      ulira=ulira)
                for b in bases}
        tables = {a: r["table"] for a, r in runs.items()}
        md = report.side_by_side(tables, {a: ATTACKS.get(a).removal_metric for a in attacks}, seeds)
        tracking.log_text(md, "comparison_attacks.md")
        tracking.set_description("\n\n".join(run["headline"] for run in runs.values())
                                 + f"\n\n{md}\nEach attack's comparison is a nested run with its own table.")
        names = [r.name for r in next(iter(tables.values()))]
        removal = {a: [_mean(t, n, "removal") for n in names] for a, t in tables.items()}
        tracking.log_figures("removal_by_attack", plots.grouped_bars(
            names, removal, "poison removal (0 = none, 1 = retrain)",
            "Best poison removal found, per attack (each method at its best feasible trial)"))
        tracking.log_dashboard(f"compare {', '.join(attacks)}")
        url = tracking.run_url()
    print(f"attacks side by side:\n{md}\nresults: {url}{tracking.serve_hint()}")
    return {"tables": tables, "markdown": md}


def _mean(table: list[report.Row], name: str, key: str) -> float:
    return next((r.mean.get(key, float("nan")) for r in table if r.name == name), float("nan"))


def _plots(table: list[report.Row], curves: dict[str, list[list[float]]], levels: list[float],
           histories: dict[str, list[list[float]]]) -> None:
    methods = [r for r in table if r.name not in report.REFERENCE_ROWS]
    tracking.log_figures("removal_by_seed", plots.removal_by_seed(
        [r.name for r in methods], [r.values.get("removal", []) for r in methods], [r.ci for r in methods],
        "Best poison removal per seed (dots), mean and 95% interval"))
    tracking.log_figures("search_progress", plots.best_so_far(
        histories, "The search's best so far: closeness to retraining on the selection part (mean over seeds)",
        ylabel="best -|1 - removal| so far (selection part)", target=0.0))
    mean_std = {}
    for m, per_seed in curves.items():
        arr = np.array(per_seed, dtype=float)  # (seeds, levels)
        with warnings.catch_warnings():  # a level no trial reached is an all-NaN column: NaN is the right answer
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(arr, axis=0)
            std = np.nanstd(arr, axis=0, ddof=1) if len(arr) > 1 else np.full(len(levels), np.nan)
        mean_std[m] = (mean.tolist(), std.tolist())
    tracking.log_figures("removal_by_budget", plots.removal_by_budget(
        levels, mean_std, "Best poison removal found within each compute budget"))
    rows = [r for r in table if "gus_z" in r.mean and "mia_tpr_at_1fpr" in r.mean]
    if rows:
        tracking.log_figures("gus_vs_mia", plots.labelled_scatter(
            [r.name for r in rows], [r.mean["mia_tpr_at_1fpr"] for r in rows], [r.mean["gus_z"] for r in rows],
            "MIA TPR at 1% FPR (forget vs test)", "GUS z (poison evidence)",
            "MIA says 'forgotten' where GUS still detects the poison",
            hlines=[(1.645, "GUS z one-sided 5% threshold")], vlines=[(0.01, "MIA at chance (TPR = FPR)")]))
    rows = [r for r in table if "removal" in r.mean and "test_acc" in r.mean]
    if rows:
        tracking.log_figures("accuracy_vs_removal", plots.labelled_scatter(
            [r.name for r in rows], [r.mean["removal"] for r in rows], [r.mean["test_acc"] for r in rows],
            "poison removal (0 = none, 1 = retrain)", "test accuracy", "Utility against removal"))
