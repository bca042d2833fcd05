"""The ``analyze`` entry point: why unlearning fails on a scenario (H1, H2) and what a strong MIA sees, in MLflow.

For one scenario (its references found or trained as by every entry point) it finds or trains the clean control
(registered as ``unlearn_search.control`` with the scenario's hash, reused like the references), finds or trains the
LiRA shadow models (their per-point fits stored as an artifact ``lira/<scenario hash>_<n>_shadows.npz`` of the run,
tagged ``lira_fits.<scenario hash>``, and reused by later runs of the same scenario and shadow count, `analyze`'s
and `compare`'s alike), takes the newest registered unlearned model of each method for the scenario (from `tune`
or `compare`), and logs: the H1 distances, the H2 cosines and gradient-span fractions, each model's progress
towards the retrained model and its detectors (the attack's own metric, the loss MIA, LiRA), a table, three figures
and a headline sentence as the run's description.
The science is in `analysis`; this module only finds, trains, logs.
"""

from __future__ import annotations

import io
import logging
import math
from typing import Any

import numpy as np
from torch import nn

from . import analysis, report, tracking
from .context import RunContext
from .models import load_model
from .scenario import ScenarioConfig, evaluate
from .store import ensure_references
from .verdict import mean_ci

log = logging.getLogger(__name__)

CONTROL_ROLE = "control"


#: Clean controls drawn for H1's interval (each another random set of clean points; one training each).
CONTROL_DRAWS = 3


def control_model(refs: Any, ctx: RunContext, draw: int = 0) -> nn.Module:
    """The scenario's clean control of ``draw``: the registered one (``unlearn_search.control`` with the scenario's
    hash and, beyond draw 0, tag ``draw``), else trained (`analysis.train_control`) and registered from a nested run
    of the active run."""
    sc = refs.scenario
    found = [v for v in tracking.find_versions(CONTROL_ROLE, {"scenario_hash": sc.config.hash})
             if int(v.tags.get("draw", "0")) == draw]
    if found:
        spec, state = tracking.load_weights(str(found[0].run_id))
        log.info("clean control (draw %d): reusing %s v%s", draw, found[0].name, found[0].version)
        return load_model(spec, state).to(ctx.device).eval()
    log.info("clean control (draw %d): training on S_corr minus %d random clean points", draw, sc.poisoning.n_poison)
    model = analysis.train_control(sc, ctx, draw)
    with tracking.run(CONTROL_ROLE, tags={"scenario_hash": sc.config.hash, "role": CONTROL_ROLE, "draw": str(draw)},
                      nested=True):
        tags = {"scenario_hash": sc.config.hash, "role": CONTROL_ROLE, "scenario_run_id": refs.scenario_run_id,
                "draw": str(draw)}
        tracking.log_model(model, sc.spec, CONTROL_ROLE, tags, input_example=sc.data.x_test[:2], name=CONTROL_ROLE,
                           tokenizer=sc.data.tokenizer,
                           description=f"Clean control of scenario `{sc.config.hash}` (draw {draw}): trained like "
                                       f"the references on S_corr minus {sc.poisoning.n_poison} random clean points "
                                       "(the poisons kept), the H1 comparison for removing the poisons.")
    return model


def control_models(refs: Any, ctx: RunContext, draws: int = CONTROL_DRAWS) -> list[nn.Module]:
    """Draws 0..``draws``-1 of the clean control (`control_model`)."""
    return [control_model(refs, ctx, d) for d in range(draws)]


def shadow_fits(refs: Any, n_shadows: int, ctx: RunContext,
                shadows: analysis.Shadows | None = None) -> analysis.ShadowFits:
    """The scenario's LiRA fits for ``n_shadows`` shadows: fitted from ``shadows`` when given, else read back from
    any run that stored them (tag ``lira_fits.<scenario hash>`` = the shadow count, artifact `fits_artifact`), else
    fitted from `shadow_set`'s models; either way stored in the active run too, so that this run carries what it
    used."""
    import mlflow

    sc = refs.scenario
    tag, path = f"lira_fits.{sc.config.hash}", fits_artifact(sc.config.hash, n_shadows)
    fits = None if shadows is None else analysis.fit_shadows(shadows, sc, ctx.device)
    runs = [] if fits is not None else mlflow.search_runs(
        search_all_experiments=True, output_format="list", filter_string=f"tags.`{tag}` = '{n_shadows}'",
        order_by=["attributes.start_time DESC"])
    for run in runs:
        try:
            data = tracking.download_bytes(run.info.run_id, path)
        except Exception:  # a run that died before logging them
            continue
        with np.load(io.BytesIO(data)) as z:
            try:
                fits = analysis.ShadowFits.from_arrays({k: z[k] for k in z.files})
            except ValueError as e:  # made by older code (another LiRA): refit from the stored models
                log.info("LiRA: not reusing the fits of run %s: %s", run.info.run_id, e)
                continue
        log.info("LiRA: reusing the fits of %d shadow models from run %s", n_shadows, run.info.run_id)
        break
    if fits is None:  # the models are stored too, for U-LiRA
        fits = analysis.fit_shadows(shadow_set(refs, n_shadows, ctx), sc, ctx.device)
    tracking.log_bytes(_npz(fits.to_arrays()), path)
    tracking.set_tags({tag: str(n_shadows)})
    return fits


def shadow_set(refs: Any, n_shadows: int, ctx: RunContext) -> analysis.Shadows:
    """The scenario's ``n_shadows`` shadow models themselves (U-LiRA unlearns with them): read back from any run that
    stored them (tag ``lira_models.<scenario hash>``, artifact ``lira/<hash>_<n>_shadow_models.pt``, weights only;
    this run then tags ``lira_models_from.<hash>`` with that run's id instead of uploading them again: for ResNet-18
    they are hundreds of MB), else trained (the same seeds as `shadow_fits`' shadows, so the same models) and stored
    in the active run."""
    import mlflow
    import torch

    from .models import create_model

    sc = refs.scenario
    tag, path = f"lira_models.{sc.config.hash}", f"lira/{sc.config.hash}_{n_shadows}_shadow_models.pt"
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string=f"tags.`{tag}` = '{n_shadows}'", order_by=["attributes.start_time DESC"])
    for run in runs:
        try:
            data = tracking.download_bytes(run.info.run_id, path)
        except Exception:  # a run that died before logging them
            continue
        stored = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        if int(stored.get("format", torch.tensor(1))) != analysis.LIRA_FORMAT:  # older code's shadows: another task
            log.info("LiRA: not reusing the shadow models of run %s (an older format)", run.info.run_id)
            continue
        models = []
        for state in stored["states"]:
            model = create_model(sc.spec, seed=0)
            model.load_state_dict(state)
            models.append(model.to(ctx.device).eval())
        log.info("LiRA: reusing %d shadow models from run %s", n_shadows, run.info.run_id)
        tracking.set_tags({f"lira_models_from.{sc.config.hash}": run.info.run_id})
        return analysis.Shadows(models)
    log.info("LiRA: training %d shadow models (replicates of the poisoned model's and the retrained model's "
             "trainings, half each)", n_shadows)
    shadows = analysis.shadow_models(sc, n_shadows, ctx)
    buf = io.BytesIO()
    torch.save({"states": [{k: v.cpu() for k, v in m.state_dict().items()} for m in shadows.models],
                "format": torch.tensor(analysis.LIRA_FORMAT)}, buf)
    tracking.log_bytes(buf.getvalue(), path)
    tracking.set_tags({tag: str(n_shadows)})
    return shadows


class _Recorded:
    """A duck-typed Optuna trial that replays recorded values (strings, as tags store them) through a method's
    search space, so the space's own types and derived fields (e.g. ``epochs = 0``) come back exactly."""

    def __init__(self, values: dict[str, str], user_attrs: dict[str, Any]) -> None:
        self.values, self.user_attrs = values, user_attrs

    def suggest_float(self, name: str, *args: Any, **kwargs: Any) -> float:
        return float(self.values[name])

    def suggest_int(self, name: str, *args: Any, **kwargs: Any) -> int:
        return int(self.values[name])

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return next(c for c in choices if str(c) == self.values[name])


def registered_setting(version: Any, method_name: str, poisoned: nn.Module) -> tuple[Any, float]:
    """(config, budget) of a registered unlearned model, from its ``param.*`` tags: a tuned best trial's through
    the method's search space (tag ``study``), an ``unlearn`` run's as config fields."""
    from .cli import method_params
    from .methods import METHODS
    from .models import max_k

    method = METHODS.get(method_name)
    values = {k.removeprefix("param."): v for k, v in version.tags.items() if k.startswith("param.")}
    budget = float(values.pop("budget"))
    if "study" in version.tags and method.search_space is not None:
        kwargs = method.search_space(_Recorded(values, {"max_k": max_k(poisoned)}))
    else:
        types = method_params(method)  # a tuple field was tagged as str(tuple): "(5, 8, 9)"
        kwargs = {k: types[k][0](v.strip("()").replace(" ", "").rstrip(",")) for k, v in values.items() if k in types}
    return method.config(**kwargs), budget


def _unlearner(method: Any, mcfg: Any, budget: Any) -> analysis.UnlearnFn:
    def unlearn_fn(model: nn.Module, splits: Any, c: RunContext) -> nn.Module:
        with c.seeded_global_rng(5):  # as `unlearning.unlearn` runs a method
            return method.run(model, splits, mcfg, budget, c).model

    return unlearn_fn


def ulira_rows(refs: Any, cfg: ScenarioConfig, methods: list[str], shadows: analysis.Shadows,
               ctx: RunContext) -> dict[str, dict[str, float]]:
    """U-LiRA of each method's newest registered model, its shadows unlearned with that model's own setting
    (`registered_setting`); a method whose setting cannot be read back is left out, with a log line."""
    from .methods import METHODS, Budget

    sc, poisoned = refs.scenario, refs.models["poisoned"]
    out = {}
    for name in methods:
        found = newest_registered(name, cfg)
        if not found:
            continue
        try:
            mcfg, budget = registered_setting(found[0], name, poisoned)
        except Exception as e:  # an older or hand-made version without readable params
            log.warning("U-LiRA: %s left out: its registered setting cannot be read back (%s)", name, e)
            continue
        log.info("U-LiRA: %s on %d shadow models (budget %.3g)", name, len(shadows.models), budget)
        fits = analysis.ulira_fits(shadows, sc, _unlearner(METHODS.get(name), mcfg, Budget(budget, sc.retrain_cost)),
                                   ctx)
        spec, state = tracking.load_weights(str(found[0].run_id))
        out[name] = analysis.ulira(load_model(spec, state).to(ctx.device).eval(), refs.models["retrain"], sc, fits,
                                   ctx.device)
    return out


def fits_artifact(scenario_hash: str, n_shadows: int) -> str:
    return f"lira/{scenario_hash}_{n_shadows}_shadows.npz"


def newest_registered(method: str, cfg: ScenarioConfig, discovered: float = 1.0) -> list[Any]:
    """The method's version to judge for ``cfg``'s scenario: with every poison told, the scenario's tuned best
    (alias ``best-<hash[:8]>``, `tracking.scenario_alias`), so that a later hand ``unlearn`` run of the method never
    replaces it; without that alias (or for a discovered fraction below 1), the newest registered version of the
    scenario and fraction (tag ``discovered_fraction``, absent when every poison was told), with a log line."""
    role = tracking.unlearned_role(method)
    if discovered >= 1:
        mv = tracking.version_by_alias(role, tracking.scenario_alias(cfg.hash))
        if mv is not None and mv.tags.get("scenario_hash") == cfg.hash:
            return [mv]
    found = tracking.find_versions(role, {"scenario_hash": cfg.hash})
    want = None if discovered >= 1 else f"{discovered:g}"
    found = [v for v in found if v.tags.get("discovered_fraction") == want]
    if found and discovered >= 1:
        log.info("%s: no tuned best (alias %s) for scenario %s; judging its newest registered version %s", method,
                 tracking.scenario_alias(cfg.hash), cfg.hash, found[0].version)
    return found


def best_models(cfg: ScenarioConfig, methods: list[str], ctx: RunContext,
                discovered: float = 1.0) -> dict[str, nn.Module]:
    """Each method's unlearned model to judge for ``cfg``'s scenario (`newest_registered`: its tuned best; methods
    without one left out)."""
    out = {}
    for m in methods:
        found = newest_registered(m, cfg, discovered)
        if found:
            spec, state = tracking.load_weights(str(found[0].run_id))
            out[m] = load_model(spec, state).to(ctx.device).eval()
    return out


def hypotheses(refs: Any, controls: list[nn.Module], ctx: RunContext, gd_steps: int = 50,
               span_batches: int = 32) -> tuple[dict[str, float], dict[str, float], dict[str, list[float]]]:
    """H1's distances (against the first control) and its ℓ1 ratio over every control draw, H2's cosines and span
    fractions (the first control) for a scenario's references (see `analysis`), and H2's cosine curves by label."""
    sc = refs.scenario
    poisoned, retrain = refs.models["poisoned"], refs.models["retrain"]
    control = controls[0]
    h1 = analysis.model_shift(poisoned, retrain, control, sc.data.x_test, ctx.device)
    h1.update(analysis.l1_ratio_over_draws(poisoned, retrain, controls))
    # H2: the needed shift (poisons) and the control's (clean points), each against the data that remains after it
    theta_p = analysis.param_vector(poisoned)
    shifts = {"poisons": analysis.param_vector(retrain) - theta_p,
              "clean points": analysis.param_vector(control) - theta_p}
    remaining = {"poisons": sc.retain, "clean points": analysis.control_set(sc, ctx)}
    h2: dict[str, float] = {}
    curves: dict[str, list[float]] = {}
    for label, d in shifts.items():
        key = "poison" if label == "poisons" else "clean"
        with ctx.seeded_global_rng(9):  # train mode, as GD's updates: a model's dropout draws from the global RNG
            grads = analysis.batch_gradients(poisoned, remaining[label], ctx, n_batches=span_batches)
            al = analysis.gd_alignment(poisoned, remaining[label], d, ctx, steps=gd_steps)
        curves[f"{label}: each step"] = al["step_cosine"].tolist()
        curves[f"{label}: cumulative"] = al["cumulative_cosine"].tolist()
        h2[f"h2_cosine_first_step_{key}"] = float(al["step_cosine"][0])
        h2[f"h2_cosine_cumulative_{key}"] = float(al["cumulative_cosine"][-1])
        for r, v in analysis.gradient_span_fraction(grads, d).items():
            h2[f"h2_span_{r}_{key}"] = v
    return h1, h2, curves


def hypotheses_sentence(found: list[tuple[dict[str, float], dict[str, float]]], span_batches: int = 32,
                        gd_steps: int = 50) -> str:
    """H1 and H2 in words, means over the seeds in ``found`` ((h1, h2) per seed)."""
    def mean(d: int, key: str) -> float:
        return float(np.mean([f[d][key] for f in found]))

    ratios = [r for f in found for k, r in f[0].items() if k.startswith("h1_l1_ratio_draw")]
    ratio, lo, hi = mean_ci(ratios) if ratios else (mean(0, "h1_param_l1_ratio"), math.nan, math.nan)
    over = f" (over {len(found)} seeds)" if len(found) > 1 else ""
    interval = f" [95% interval {lo:.2f}-{hi:.2f} over {len(ratios)} control draws]" if math.isfinite(lo) else ""
    farther = "farther" if (lo if math.isfinite(lo) else ratio) > 1 else "not clearly farther"
    return (f"H1{over}: removing the poisons moved the parameters {ratio:.2f}x as far (l1){interval} as removing as "
            f"many random clean points ({farther}). H2: after {gd_steps} clean-data GD steps the "
            f"update's cosine with the needed shift is {mean(1, 'h2_cosine_cumulative_poison'):.3f} (clean control "
            f"{mean(1, 'h2_cosine_cumulative_clean'):.3f}); {100 * mean(1, 'h2_span_all_poison'):.1f}% of the needed "
            f"shift lies in the span of {span_batches} clean-gradient batches (control "
            f"{100 * mean(1, 'h2_span_all_clean'):.1f}%).")


def run_analyze(cfg: ScenarioConfig, ctx: RunContext, methods: list[str], n_shadows: int, gd_steps: int,
                span_batches: int, experiment: str | None, ulira: bool = True) -> dict[str, Any]:
    from . import plots

    tracking.configure(experiment)
    tags = {"entry_point": "analyze", tracking.KIND: "analyze", "scenario_hash": cfg.hash,
            "lira_shadows": str(n_shadows), "ulira": str(ulira).lower()}
    with tracking.run(f"analyze {cfg.attack} {cfg.hash[:8]}", tags=tags):
        tracking.log_params({**cfg.to_flat(), "shadows": n_shadows, "gd_steps": gd_steps,
                             "span_batches": span_batches, "ulira": ulira})
        refs = ensure_references(cfg, ctx)
        sc = refs.scenario
        poisoned, retrain = refs.models["poisoned"], refs.models["retrain"]
        controls = control_models(refs, ctx)
        shadows = shadow_set(refs, n_shadows, ctx) if ulira else None
        fits = shadow_fits(refs, n_shadows, ctx, shadows)
        unlearned_lira = ulira_rows(refs, cfg, methods, shadows, ctx) if shadows is not None else {}

        h1, h2, curves = hypotheses(refs, controls, ctx, gd_steps, span_batches)
        tracking.log_metrics({**h1, **h2})

        # detectors and progress, per model
        models = {"no unlearning": poisoned, "retrain": retrain, **best_models(cfg, methods, ctx)}
        key = sc.attack.removal_metric
        detector = {"gaussian": "gus_tpr_at_1fpr"}.get(cfg.attack, key)
        rows: list[dict[str, Any]] = []
        for name, model in models.items():
            m = evaluate(model, sc, ctx)
            row: dict[str, Any] = {"model": name, key: m.get(key, math.nan), detector: m.get(detector, math.nan),
                   "mia_tpr_at_1fpr": m["mia_tpr_at_1fpr"], **analysis.lira(model, sc, fits, ctx.device)}
            if name not in ("no unlearning", "retrain"):
                row.update(analysis.progress(model, poisoned, retrain))
                row.update(unlearned_lira.get(name, {}))
            rows.append(row)
            slug = name.replace(" ", "_")
            tracking.log_metrics({k: v for k, v in row.items() if k != "model" and math.isfinite(float(v))},
                                 prefix=f"{slug}.")
        table = _table(rows, key, detector)
        tracking.log_text(table, "analysis.md")

        # figures
        tracking.log_figures("h1_model_shift", plots.grouped_bars(
            ["parameters l1 / 100", "parameters l2", "outputs l1 x 100", "outputs l2 x 100"],
            {"remove the poisons (retrain)": [h1["h1_param_l1_poison"] / 100, h1["h1_param_l2_poison"],
                                              100 * h1["h1_output_l1_poison"], 100 * h1["h1_output_l2_poison"]],
             "remove as many clean points (control)": [h1["h1_param_l1_clean"] / 100, h1["h1_param_l2_clean"],
                                                       100 * h1["h1_output_l1_clean"],
                                                       100 * h1["h1_output_l2_clean"]]},
            "distance from the poisoned model", "H1: how far removing the poisons moves the model",
            reference_lines=False))
        tracking.log_figures("h2_gd_cosine", plots.lines(
            curves, "GD step on the retain set", "cosine with the needed shift",
            "H2: clean-data GD updates against the shift (retrain or control minus poisoned)"))
        names = [str(r["model"]) for r in rows]
        tracking.log_figures("detectors_tpr", plots.grouped_bars(
            names, {detector: [r[detector] for r in rows], "loss MIA": [r["mia_tpr_at_1fpr"] for r in rows],
                    f"LiRA ({n_shadows} shadows)": [r["lira_tpr_at_1fpr"] for r in rows],
                    **({"U-LiRA": [r.get("ulira_tpr_at_1fpr", math.nan) for r in rows]}
                       if ulira else {})},
            "TPR at 1% FPR", "Which detector still sees the poisons", reference_lines=False))
        tracking.log_dashboard(f"analyze {cfg.hash[:8]}")
        headline = _headline(h1, h2, rows, span_batches, gd_steps)
        tracking.set_description(f"{headline}\n\n{table}")
        tracking.set_tags({"headline": headline[:5000]})
        url = tracking.run_url()
    print(table)
    print(headline)
    print(f"results: {url}{tracking.serve_hint()}")
    return {"h1": h1, "h2": h2, "rows": rows, "headline": headline}


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) and math.isfinite(v) else ("" if isinstance(v, float) else str(v))


def _table(rows: list[dict[str, Any]], key: str, detector: str) -> str:
    cols = [("model", "model"), (key, key), (detector, f"{detector}"), ("mia_tpr_at_1fpr", "loss MIA TPR@1%"),
            ("lira_tpr_at_1fpr", "LiRA TPR@1%"), ("lira_tpr_at_0.1fpr", "LiRA TPR@0.1%"), ("lira_auc", "LiRA AUC"),
            ("ulira_tpr_at_1fpr", "U-LiRA TPR@1%"), ("ulira_auc", "U-LiRA AUC"),
            ("ulira_retrain_auc", "U-LiRA null AUC (retrained)"),
            ("h1_progress", "way to retrain"), ("h1_travel_l2", "moved (l2)")]
    head = "| " + " | ".join(t for _, t in cols) + " |\n|" + "---|" * len(cols) + "\n"
    return head + "".join("| " + " | ".join(_fmt(r.get(k, math.nan)) for k, _ in cols) + " |\n" for r in rows)


def _headline(h1: dict[str, float], h2: dict[str, float], rows: list[dict[str, Any]], span_batches: int,
              gd_steps: int) -> str:
    lira = {r["model"]: r["lira_tpr_at_1fpr"] for r in rows}
    still = [m for m, v in lira.items() if m not in ("no unlearning", "retrain") and v > 2 * max(lira["retrain"], 0.01)]
    return (hypotheses_sentence([(h1, h2)], span_batches, gd_steps)
            + f" LiRA at 1% FPR: poisoned {lira['no unlearning']:.2f}, retrained {lira['retrain']:.2f}"
            + (f"; still above twice the retrained model's for {', '.join(still)}" if still else "")
            + report.lira_power(lira["no unlearning"], lira["retrain"])
            + f" ({report.null_check(next(r['lira_auc'] for r in rows if r['model'] == 'retrain'))})."
            + _ulira_sentence(rows))


def _ulira_sentence(rows: list[dict[str, Any]]) -> str:
    auc = {r["model"]: r["ulira_auc"] for r in rows if "ulira_auc" in r}
    if not auc:
        return ""
    told = [m for m, v in auc.items() if v >= 0.6]
    nulls = [r["ulira_retrain_auc"] for r in rows if "ulira_retrain_auc" in r]
    off = [r["model"] for r in rows if abs(r.get("ulira_retrain_auc", 0.5) - 0.5) > report.NULL_AUC_TOLERANCE]
    return (" U-LiRA AUC, unlearned against never seen, poison by poison (0.5: indistinguishable): "
            + ", ".join(f"{m} {v:.2f}" for m, v in auc.items())
            + (f"; told apart (>= 0.6) for {', '.join(told)}" if told else "; none told apart (>= 0.6)")
            + f" (null check: the retrained model's U-LiRA AUC {min(nulls):.2f}-{max(nulls):.2f}"
            + (f", NOT within 0.5 ± {report.NULL_AUC_TOLERANCE:g} for {', '.join(off)}: do not read those)."
               if off else f", within 0.5 ± {report.NULL_AUC_TOLERANCE:g})."))
