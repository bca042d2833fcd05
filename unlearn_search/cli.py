"""Command line: ``python -m unlearn_search <command>`` (the MLproject entry points call the same commands).

The only layer that turns exceptions into exit codes: a `UsageError` becomes one line on stderr and exit status 2,
before anything is written to MLflow.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import fields
from typing import Any, NoReturn

from .errors import UsageError

log = logging.getLogger("unlearn_search")


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (no usage dump) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see --help)\n")


def _add_scenario_args(p: argparse.ArgumentParser) -> None:
    from .attacks import ATTACKS
    from .attacks.gaussian import GaussianConfig
    from .presets import PRESETS
    from .training import TrainConfig

    g = GaussianConfig()
    s = p.add_argument_group("scenario (what is poisoned and how the references are trained); a flag left at "
                             "'default' takes the preset's value")
    s.add_argument("--preset", default="default", help="; ".join(
        f"{n}: {PRESETS.get(n).summary}" for n in PRESETS.names()))
    s.add_argument("--dataset", default="default",
                   help="digits, cifar10, npz:<file>, folder:<dir>; text: sentiment, imdb, text:<file.csv|.jsonl> "
                        "(default: the preset's; digits)")
    s.add_argument("--model", default="default",
                   help="mlp, cnn, linear, resnet18_cifar or timm:<architecture>; text: gpt2-tiny, gpt2-mini or "
                        "hf:<name> (default: the preset's; mlp)")
    s.add_argument("--attack", default="gaussian",
                   help=f"poisoning attack: {', '.join(ATTACKS.names())} (default: gaussian)")
    s.add_argument("--poison-fraction", type=_optional_float, default="default",
                   help="fraction of the training points poisoned, in (0, 1), or 1 and above a whole number of poisons "
                        f"(750: exactly 750) (default: the attack's; gaussian {g.poison_fraction})")
    s.add_argument("--eps", type=_optional_float, default="default",
                   help=f"perturbation size, e.g. Gaussian noise std on [0,1] inputs (default: the attack's; {g.eps})")
    s.add_argument("--attack-params", type=_key_values, default="none",
                   help="other attack parameters as key=value,key=value (e.g. target_class=3,patch_size=2)")
    default_train = PRESETS.get("default").train
    for f in fields(TrainConfig):
        value = getattr(default_train, f.name)
        cast = _parse_bool if isinstance(value, bool) else type(value)
        s.add_argument(f"--train-{f.name.replace('_', '-')}", type=_or_default(cast), default="default",
                       help=f"training recipe: {f.name} (default: the preset's; {format_default(value)})")
    s.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
    p.add_argument("--experiment", default=None, help="MLflow experiment (default: unlearn_search)")


#: Seeds are non-negative and fit numpy's and torch's seed types with room for the derived seeds.
SEED_MAX = 2**32 - 1


def scenario_from_args(a: argparse.Namespace) -> Any:
    from .errors import check_range
    from .presets import PRESETS

    check_range("seed", a.seed, low=0, high=SEED_MAX)
    from .scenario import ScenarioConfig
    from .training import TrainConfig

    preset = PRESETS.get(a.preset)
    train = TrainConfig(**{f.name: _given(getattr(a, f"train_{f.name}"), getattr(preset.train, f.name))
                           for f in fields(TrainConfig)})
    attack_params = {**preset.attack_params.get(a.attack, {}),
                     **{k: v for k, v in {"poison_fraction": a.poison_fraction, "eps": a.eps}.items() if v is not None},
                     **a.attack_params}
    return ScenarioConfig(dataset=_given(a.dataset, preset.dataset), model=_given(a.model, preset.model),
                          attack=a.attack, attack_params=attack_params, train=train, seed=a.seed)


def _given(value: Any, preset_value: Any) -> Any:
    """The flag's value unless it was left at 'default' (None after parsing), else the preset's."""
    return preset_value if value is None or value == "default" else value


def _add_verdict_args(p: argparse.ArgumentParser) -> None:
    from .verdict import EQUIVALENCE_MARGIN, SELECT_FRACTION

    p.add_argument("--select-fraction", type=float, default=SELECT_FRACTION,
                   help="share of the poisons (the attack's units) the search selects its best trial on; the verdict "
                        "is computed on the rest, which the search never sees (in (0, 1))")
    p.add_argument("--equivalence-margin", type=float, default=EQUIVALENCE_MARGIN,
                   help="'removed' needs the residue within this fraction of the poisoned model's residue, with 95%% "
                        "confidence (in (0, 1); 0.2: at least 80%% of the poison's signal gone)")


def _add_stop_args(p: argparse.ArgumentParser, stop: str) -> None:
    from .stopping import MIN_TRIALS, PATIENCE, TOLERANCE

    p.add_argument("--stop", default=stop,
                   help="settled: stop each study when its best case has settled (at least --min-trials; settled "
                        f"when the last --patience trials raised it by at most {TOLERANCE:g}), with n_trials the cap "
                        "on its finished trials; fixed: exactly n_trials (default: %(default)s)")
    p.add_argument("--min-trials", type=int, default=MIN_TRIALS,
                   help="stop=settled: the fewest finished trials a study runs (default: %(default)s)")
    p.add_argument("--patience", type=int, default=PATIENCE,
                   help="stop=settled: settled when the best case moved by at most the tolerance in this many "
                        "finished trials (default: %(default)s)")
    p.add_argument("--sampler", default="tpe",
                   help="Optuna sampler: tpe (default, the benchmarks' winner), random, gp (a study of its own)")


def _stop_kwargs(a: argparse.Namespace) -> dict[str, Any]:
    return {"stop": a.stop, "min_trials": a.min_trials, "patience": a.patience, "sampler": a.sampler}


def _prepare(a: argparse.Namespace) -> tuple[Any, Any, Any]:
    """Validate the scenario, its data and the device before anything is written: (config, run context, data)."""
    from .context import RunContext, select_device
    from .data import load_dataset

    cfg = scenario_from_args(a)
    ctx = RunContext(seed=cfg.seed, device=select_device(a.device))
    # the data too: a malformed file or an attack parameter the data cannot take fails here, before any run exists
    data = load_dataset(cfg.dataset, cfg.model, cfg.train.max_length)
    attack = cfg.make_attack()
    attack.check_data(data)
    attack.n_poisons(len(data.x_train))  # a count of poisons larger than the training set fails here
    if hasattr(a, "select_fraction"):  # the verdict's split and margin, before any run exists
        from .unlearning import check_split
        from .verdict import check_fraction

        check_fraction("equivalence_margin", a.equivalence_margin)
        check_fraction("select_fraction", a.select_fraction)
        n_units = attack.n_units(data)
        if n_units is not None:
            check_split(attack, n_units, a.select_fraction)
    return cfg, ctx, data


def cmd_poison(a: argparse.Namespace) -> int:
    from . import tracking
    from .store import ROLES, ensure_references

    cfg, ctx, _ = _prepare(a)
    tracking.configure(a.experiment)
    with tracking.run(f"poison-{cfg.hash[:8]}", tags={"entry_point": "poison", "scenario_hash": cfg.hash}):
        tracking.log_params(cfg.to_flat())
        tracking.set_tags({"device": str(ctx.device)})
        refs = ensure_references(cfg, ctx, own_run=True)
        tracking.set_tags({"reused": str(refs.reused).lower(), "scenario_run_id": refs.scenario_run_id,
                           **{f"{r}_model": str(v) for r, v in refs.versions.items()}})
        for role in ROLES:
            tracking.log_metrics(refs.metrics[role], prefix=f"{role}.")
    _print_table(f"scenario {cfg.hash} ({'reused' if refs.reused else 'trained'})", refs.metrics)
    return 0


def cmd_unlearn(a: argparse.Namespace) -> int:
    from . import report, tracking
    from .methods import METHODS, Budget
    from .store import ensure_references
    from .unlearning import Discovery, Yardstick, check_discovered_fraction, unlearn

    method = METHODS.get(a.method)
    cfg_params = {name: getattr(a, f"m_{name}") for name in method_params(method)}
    mcfg = method.config(**cfg_params)
    Budget(a.budget, 1.0)  # validates the fraction up front
    _check_tolerance(a.utility_tolerance)
    check_discovered_fraction(a.discovered_fraction)
    cfg, ctx, data = _prepare(a)
    from .models import ModelSpec, create_model

    method.check(mcfg, create_model(ModelSpec(cfg.model, data.input_shape, data.n_classes, data.vocab_size), seed=0))
    tracking.configure(a.experiment)
    tags = {"entry_point": "unlearn", "method": method.name, "scenario_hash": cfg.hash}
    with tracking.run(f"{method.name}-{cfg.hash[:8]}", tags=tags):
        tracking.log_params({**cfg.to_flat(), "method": method.name, "budget": a.budget,
                             "utility_tolerance": a.utility_tolerance, "discovered_fraction": a.discovered_fraction,
                             **{f"method.{k}": v for k, v in cfg_params.items()}})
        tracking.set_tags({"device": str(ctx.device)})
        refs = ensure_references(cfg, ctx)
        yard = Yardstick.of_models(refs.scenario, refs.models, ctx, a.select_fraction, a.equivalence_margin)
        discovery = None
        if a.discovered_fraction < 1:
            discovery = Discovery.of(refs.scenario, a.discovered_fraction, yard.poisoned, yard.retrain, ctx)

        def on_epoch(epoch: int, model: Any, values: dict[str, float]) -> None:
            log.info("  %s epoch %d: %s", method.name, epoch + 1, ", ".join(f"{k} {v:.4g}" for k, v in values.items()))
            tracking.log_metrics(values, prefix="epoch.", step=epoch)

        out = unlearn(method, mcfg, a.budget, refs.scenario, refs.models["poisoned"], refs.metrics,
                      yard, ctx, on_epoch=on_epoch, utility_tolerance=a.utility_tolerance,
                      discovery=discovery)
        parts = yard.references(refs.scenario.attack, refs.metrics)
        tracking.log_metrics(out.metrics)
        for role in ("poisoned", "retrain"):
            tracking.log_metrics(parts[role], prefix=f"{role}.")
        removed = bool(out.metrics["poison_removed"])
        answer = report.answer_of(out.metrics)
        tracking.set_tags({"poison_removed": str(removed).lower(), "verdict": answer})
        if a.register:
            hparams = {**cfg_params, "budget": a.budget}
            lineage = {"scenario_hash": cfg.hash, "method": method.name, **tracking.reference_tags(refs.versions),
                       **({"discovered_fraction": f"{a.discovered_fraction:g}"} if discovery else {}),
                       **{f"param.{k}": str(v) for k, v in hparams.items()}}
            description = report.describe_unlearned(
                method.name, out.metrics, refs.metrics, refs.versions, refs.scenario.attack.removal_metric,
                f"seed {cfg.seed}, one unlearn run at budget {a.budget:g}", refs.scenario.attack.residual_test)
            mv = tracking.log_model(out.model, refs.scenario.spec, tracking.unlearned_role(method.name),
                                    input_example=refs.scenario.data.x_test[:2], tags=lineage, name=method.name,
                                    params=hparams, metrics=out.metrics, description=description,
                                    tokenizer=refs.scenario.data.tokenizer)
            log.info("registered %s v%s", mv.name, mv.version)
    table = {"poisoned": parts["poisoned"], method.name: out.metrics, "retrain": parts["retrain"]}
    _print_table(f"{method.name} on scenario {cfg.hash}, budget {a.budget:g}", table)
    key = refs.scenario.attack.removal_metric
    acc, acc_p = out.metrics["test_acc"], refs.metrics["poisoned"]["test_acc"]
    utility = (f"utility kept (test accuracy {acc:.3g}, poisoned {acc_p:.3g})" if acc >= acc_p - a.utility_tolerance
               else f"UTILITY LOST: test accuracy {acc:.3g} against the poisoned model's {acc_p:.3g} (tolerance "
                    f"{a.utility_tolerance:g}), so the removal does not count")
    print(f"removal {out.metrics['removal']:.3f} on the verdict part ({key}: poisoned {parts['poisoned'][key]:.3g}, "
          f"unlearned {out.metrics[key]:.3g}, retrain {parts['retrain'][key]:.3g}); {utility}; "
          f"poison {answer}: {report.answer_reason(out.metrics, answer, a.equivalence_margin)} "
          f"({refs.scenario.attack.residual_test})")
    return 0


def cmd_tune(a: argparse.Namespace) -> int:
    from .errors import check_range
    from .search import TuneConfig, connect_storage
    from .tune import run_tune

    seed = a.seed if a.sampler_seed < 0 else a.sampler_seed
    check_range("sampler_seed", seed, low=0, high=SEED_MAX)
    tc = TuneConfig(method=a.method, n_trials=a.n_trials, timeout=a.timeout, budget_max=a.budget_max, seed=seed,
                    storage=a.storage, study_name=a.study_name, utility_tolerance=a.utility_tolerance, mode=a.mode,
                    discovered_fraction=a.discovered_fraction, select_fraction=a.select_fraction,
                    equivalence_margin=a.equivalence_margin, **_stop_kwargs(a))
    cfg, ctx, _ = _prepare(a)
    _warn_literal_secret(tc.storage)
    connect_storage(tc.storage)  # before any MLflow run exists, so a bad URL creates nothing
    run_tune(tc, cfg, ctx, a.experiment)
    return 0


def cmd_compare(a: argparse.Namespace) -> int:
    from .compare import parse_attacks, parse_fractions, parse_levels, parse_methods, run_compare_attacks
    from .errors import check_range
    from .search import TuneConfig, connect_storage

    methods = parse_methods(a.methods)
    attacks = parse_attacks(a.attacks, a.attack)
    fractions = parse_fractions(a.discovered_fraction)
    if len(fractions) > 1 and len(attacks) > 1:
        raise UsageError(f"discovered_fraction={a.discovered_fraction} sweeps one attack; with attacks={a.attacks} "
                         "give one fraction (or sweep each attack in its own compare)")
    if len(attacks) > 1 and a.attack_params:
        raise UsageError(f"attack_params={a.attack_params} applies to one attack; with attacks={a.attacks} each "
                         "attack takes its defaults (poison_fraction and eps, when given, apply to all)")
    levels = parse_levels(a.budget_levels)
    check_range("wait_for_workers", a.wait_for_workers, low=0)
    from .analysis import check_shadows

    check_shadows("lira_shadows", a.lira_shadows, off_allowed=True)
    if a.ulira and not a.lira_shadows:
        raise UsageError("ulira=true needs shadow models: give lira_shadows (an even number >= 6) too")
    if a.ulira and fractions != [1.0]:
        raise UsageError(f"ulira=true applies when every poison is told; discovered_fraction={a.discovered_fraction} "
                         "is not 1")
    template = TuneConfig(method=methods[0], n_trials=a.n_trials, budget_max=a.budget_max, storage=a.storage,
                          utility_tolerance=a.utility_tolerance, discovered_fraction=fractions[0],
                          select_fraction=a.select_fraction, equivalence_margin=a.equivalence_margin,
                          warm_start_seeds=a.warm_start, **_stop_kwargs(a))
    from .presets import PRESETS

    seeds = _given(a.seeds, PRESETS.get(a.preset).seeds)
    check_range("seeds", seeds, low=1)
    # one scenario per attack, every one validated before anything runs (--attack only matters without --attacks)
    prepared = [_prepare(argparse.Namespace(**{**vars(a), "attack": attack})) for attack in attacks]
    bases, ctx = [cfg for cfg, _, _ in prepared], prepared[0][1]
    _warn_literal_secret(template.storage)
    connect_storage(template.storage)
    if len(fractions) > 1:
        from .compare import run_compare_discovery

        run_compare_discovery(methods, bases[0], seeds, levels, template, ctx, a.experiment, fractions,
                              wait_s=a.wait_for_workers, lira_shadows=a.lira_shadows, hypotheses=a.hypotheses)
        return 0
    run_compare_attacks(methods, bases, seeds, levels, template, ctx, a.experiment, wait_s=a.wait_for_workers,
                        lira_shadows=a.lira_shadows, hypotheses=a.hypotheses, ulira=a.ulira)
    return 0


def cmd_plan(a: argparse.Namespace) -> int:
    from .analysis import check_shadows
    from .compare import parse_attacks, parse_fractions, parse_methods
    from .context import select_device
    from .errors import check_range
    from .plan import make_plan, measure_throughput, render
    from .presets import PRESETS

    methods = parse_methods(a.methods)
    attacks = parse_attacks(a.attacks, a.attack)
    check_range("n_trials", a.n_trials, low=1)
    check_range("budget_max", a.budget_max, low=0, high=1, low_open=True)
    check_shadows("lira_shadows", a.lira_shadows, off_allowed=True)
    check_range("examples_per_second", a.examples_per_second, low=0)
    seeds = _given(a.seeds, PRESETS.get(a.preset).seeds)
    check_range("seeds", seeds, low=1)
    fractions = parse_fractions(a.discovered_fraction)
    bases = [scenario_from_args(argparse.Namespace(**{**vars(a), "attack": attack})) for attack in attacks]
    plan = make_plan(bases, seeds, methods, a.n_trials, a.budget_max, a.lira_shadows, a.hypotheses,
                     studies_per_method=len(fractions))
    unit = "GPU"
    if a.examples_per_second > 0:
        per_s, source = a.examples_per_second, "given"
    else:
        device = select_device(a.device)
        cfg = bases[0]
        per_s = measure_throughput(cfg, plan.scenarios[0].sizes, device)
        where = torch_device_name(device)
        precision = "bf16 autocast" if cfg.train.amp and device.type == "cuda" else "fp32"
        source = (f"measured here: {cfg.model} training, batch {cfg.train.batch_size}, {precision}, on {where}; "
                  "give the GPU's own figure with --examples-per-second")
        unit = "GPU" if device.type == "cuda" else "CPU"
    print(render(plan, per_s, source, label=f" (preset {a.preset})", unit=unit))
    return 0


def torch_device_name(device: Any) -> str:
    """``cuda:0 (NVIDIA H100 80GB HBM3)`` or ``cpu (N threads)``: what a measured speed was measured on."""
    import torch

    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    n = torch.get_num_threads()
    return f"{device} ({n} thread{'' if n == 1 else 's'})"


def cmd_analyze(a: argparse.Namespace) -> int:
    from .analysis import check_shadows
    from .analyze import run_analyze
    from .compare import parse_methods
    from .errors import check_range

    methods = parse_methods(a.methods)
    check_shadows("shadows", a.shadows)
    check_range("gd_steps", a.gd_steps, low=1)
    check_range("span_batches", a.span_batches, low=1)
    cfg, ctx, _ = _prepare(a)
    run_analyze(cfg, ctx, methods, a.shadows, a.gd_steps, a.span_batches, a.experiment, a.ulira)
    return 0


def _warn_literal_secret(storage: str) -> None:
    from .redact import has_literal_secret, redact_uri

    if has_literal_secret(storage):
        log.warning("storage %s spells a password out: `mlflow run` records every -P value verbatim in the run's "
                    "params; pass it as ${PGPASSWORD} (taken from the environment) instead", redact_uri(storage))


def _check_tolerance(value: float) -> None:
    from .errors import check_range

    check_range("utility_tolerance", value, low=0, high=1)


def _print_table(title: str, columns: dict[str, dict[str, float]]) -> None:
    from .attacks import ATTACKS

    attack_keys = [k for name in ATTACKS.names() for k, _ in ATTACKS.get(name).columns]
    keys = ["test_acc", "retain_acc", "forget_acc", *attack_keys, "gus_auc", "mia_auc", "mia_tpr_at_1fpr",
            "budget_used", "removal"]
    lines = [f"{'metric':<16}" + "".join(f"{r:>14}" for r in columns)]
    for k in keys:
        if any(k in m for m in columns.values()):
            lines.append(f"{k:<16}" + "".join(f"{m[k]:>14.4g}" if k in m else f"{'-':>14}" for m in columns.values()))
    print(f"{title}:\n" + "\n".join(lines))


# --- method parameters as command-line options -------------------------------------------------------------------


def method_params(method: Any) -> dict[str, tuple[Any, Any]]:
    """name -> (parser type, default) for each field of the method's config."""
    import typing

    hints = typing.get_type_hints(method.Config)
    out: dict[str, tuple[Any, Any]] = {}
    for f in fields(method.Config):
        out[f.name] = (_parser_type(hints[f.name]), f.default)
    return out


def _optional_float(v: str) -> float | None:
    """A float, or None for 'default' / '' (the attack's own default)."""
    if v.strip().lower() in ("", "default", "none"):
        return None
    try:
        return float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {v!r}; valid: a number or 'default'") from None


def _or_default(cast: Any) -> Any:
    """An argparse type: ``cast(v)``, or None for 'default' (the preset's value)."""

    def parse(v: str) -> Any:
        if v.strip().lower() == "default":
            return None
        try:
            return cast(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid value {v!r}; valid: a {cast.__name__} or 'default'") from None

    parse.__name__ = cast.__name__
    return parse


def _key_values(v: str) -> dict[str, Any]:
    """'a=1,b=x' -> {'a': 1, 'b': 'x'} (numbers parsed); '' or 'none' -> {}."""
    out: dict[str, Any] = {}
    if v.strip().lower() in ("", "none"):
        return out
    for item in v.split(","):
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(f"invalid key=value item {item!r} in {v!r}")
        parsed: Any = val.strip()
        for cast in (int, float):
            try:
                parsed = cast(val)
                break
            except ValueError:
                continue
        out[key.strip()] = parsed
    return out


def _parse_bool(v: str) -> bool:
    if v.lower() in ("1", "true", "yes"):
        return True
    if v.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"invalid bool {v!r}; valid: true, false")


def _parse_int_tuple(v: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in v.split(",") if x.strip() and x.strip().lower() != "none")
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid list {v!r}; valid: comma-separated integers or none") from None


def _parser_type(hint: Any) -> Any:
    if hint is bool:
        return _parse_bool
    if hint in (int, float, str):
        return hint
    if getattr(hint, "__origin__", None) is tuple:
        return _parse_int_tuple
    raise TypeError(f"unsupported config field type {hint!r}")


def format_default(value: Any) -> str:
    """A config default as the command line (and MLproject) spells it."""
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) or "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _method_name(name: str) -> str:
    """A registered method's name (built-in or plugin); else the one-line error listing both kinds."""
    from .methods import METHODS

    try:
        METHODS.get(name)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return name


def _method_from_argv(argv: Sequence[str]) -> str | None:
    for i, tok in enumerate(argv):
        if tok == "--method" and i + 1 < len(argv):
            return argv[i + 1]
        if tok.startswith("--method="):
            return tok.split("=", 1)[1]
    return None


#: compare's default cap on a study's trials with stop=settled (docs/tune.md, "When a search stops").
N_TRIALS_CAP = 150

#: The options of `compare` that `plan` takes too: those that change how much `compare` runs.
PLAN_OPTIONS = ("methods", "attacks", "n_trials", "seeds", "budget_max", "lira_shadows", "hypotheses",
                "discovered_fraction")


DISCOVERED_HELP = ("partial discovery: the fraction of the poisons the method is told, in (0, 1] (a seeded subset; the "
                   "rest stay in its retain set; removal is measured over all poisons and over each part)")


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser; ``argv`` lets ``unlearn --method X`` add method X's own options (and show them in --help)."""
    from .methods import METHODS

    p = _Parser(prog="unlearn_search", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and results")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    poison = sub.add_parser("poison", help="build a scenario: train and register the poisoned and retrained models")
    _add_scenario_args(poison)
    poison.set_defaults(func=cmd_poison)

    un = sub.add_parser("unlearn", help="run one unlearning method on a scenario and judge it against retraining")
    un.add_argument("--method", required=True, type=_method_name, help="unlearning method (built-in or plugin)")
    un.add_argument("--budget", type=float, default=0.1, help="compute budget, fraction of retraining (0, 1]")
    un.add_argument("--utility-tolerance", type=float, default=0.02,
                    help="largest test-accuracy drop from the poisoned model that still counts as utility kept")
    un.add_argument("--register", type=_parse_bool, default=True, help="register the unlearned model (true/false)")
    un.add_argument("--discovered-fraction", type=float, default=1.0, help=DISCOVERED_HELP)
    _add_verdict_args(un)
    _add_scenario_args(un)
    name = _method_from_argv(argv)
    if name is not None and name in METHODS:
        un.set_defaults(budget=METHODS.get(name).default_budget)
        g = un.add_argument_group(f"{name} parameters")
        for field_name, (typ, default) in method_params(METHODS.get(name)).items():
            flags = [f"--{field_name.replace('_', '-')}"]
            if "_" in field_name:  # as `mlflow run -e unlearn -P batch_size=32` passes it on: --batch_size 32
                flags.append(f"--{field_name}")
            g.add_argument(*flags, dest=f"m_{field_name}", type=typ, default=default,
                           help=f"default: {format_default(default)}")
    un.set_defaults(func=cmd_unlearn)

    tu = sub.add_parser("tune", help="Optuna search of a method's hyperparameters and budget for best-case removal")
    tu.add_argument("--method", required=True, type=_method_name,
                    help="unlearning method to tune (built-in or plugin)")
    tu.add_argument("--n-trials", type=int, default=20,
                    help="stop=fixed: trials to add to the study in this run; stop=settled: the cap on its finished "
                         "trials")
    _add_stop_args(tu, "fixed")
    tu.add_argument("--timeout", type=float, default=0.0, help="stop adding trials after this many seconds (0: none)")
    tu.add_argument("--budget-max", type=float, default=0.1,
                    help="largest budget a trial may draw (fraction of retraining)")
    tu.add_argument("--storage", default="optuna_journal.log",
                    help="Optuna storage shared by all workers: a journal file (one machine), a database URL "
                    "such as postgresql://user:${PGPASSWORD}@host/db (many machines), or an Optuna gRPC storage proxy "
                    "grpc://host:port (more workers than a database serves); $VARS come from the environment")
    tu.add_argument("--study-name", default="", help="default: <method>-<scenario hash>-c")
    tu.add_argument("--discovered-fraction", type=float, default=1.0, help=DISCOVERED_HELP)
    _add_verdict_args(tu)
    tu.add_argument("--sampler-seed", type=int, default=-1,
                    help="seed of Optuna's sampler (-1: use --seed); every worker of a study uses the study's seed "
                         "(each trial's draws are seeded from it and the trial number, so workers never repeat "
                         "each other)")
    tu.add_argument("--utility-tolerance", type=float, default=0.02,
                    help="a trial is infeasible if test accuracy drops more than this below the poisoned model's")
    tu.add_argument("--mode", default="single", help="single (max removal) or pareto (removal vs compute)")
    _add_scenario_args(tu)
    tu.set_defaults(func=cmd_tune)

    co = sub.add_parser("compare", help="every method tuned at its best, against no unlearning and retraining")
    co.add_argument("--methods", default="paper",
                    help="paper (the paper's eight), all (every method, plugins included) or a comma-separated list")
    co.add_argument("--attacks", default="same",
                    help="compare under several attacks side by side: all or a comma-separated list "
                         "(default: same, i.e. just --attack)")
    co.add_argument("--n-trials", type=int, default=N_TRIALS_CAP,
                    help="stop=settled: the cap on each study's finished trials; stop=fixed: the finished trials each "
                         "study should have (finished or settled studies are reused) (default: %(default)s)")
    _add_stop_args(co, "settled")
    co.add_argument("--warm-start", type=_parse_bool, default=False,
                    help="each seed's study of a method first tries the best settings of the method's earlier seeds "
                         "(settings only; every seed is judged on its own poisons; measured to make settled studies "
                         "stop sooner at worse best cases, docs/tune.md) (true/false; default false)")
    co.add_argument("--seeds", type=_or_default(int), default="default",
                    help="number of scenario seeds (seed, seed+1, ...), each a full scenario with its own references "
                         "and searches; the verdict combines them (default: the preset's; 3, paper 8)")
    co.add_argument("--budget-levels", default="0.02,0.04,0.06,0.08,0.1",
                    help="budget levels (fractions of retraining) of the removal-by-budget curve")
    co.add_argument("--budget-max", type=float, default=0.1, help="largest budget a trial may draw")
    co.add_argument("--storage", default="optuna_journal.log", help="Optuna storage (as for tune)")
    co.add_argument("--utility-tolerance", type=float, default=0.02,
                    help="a trial is infeasible if test accuracy drops more than this below the poisoned model's")
    _add_verdict_args(co)
    co.add_argument("--wait-for-workers", type=float, default=0.0, metavar="SECONDS",
                    help="let running tune workers fill each method's study (shared --storage; a worker runs `tune` "
                         "with the same scenario options, its --seed and --method, and joins the study by its "
                         "default name): wait up to SECONDS per study for n_trials finished trials, then run what "
                         "is missing here (default 0: run every study here, in turn)")
    co.add_argument("--lira-shadows", type=int, default=0,
                    help="also score every row with LiRA, a strong membership inference attack, with this many shadow "
                         "models per seed (an even number, at least 6: fewer cannot calibrate its null; in pairs, "
                         "one replicating the poisoned model's training, one the retrained model's; "
                         "trained once per scenario and reused; default 0: off)")
    co.add_argument("--discovered-fraction", default="1",
                    help="partial discovery: the fraction of the poisons each method is told, in (0, 1], or a "
                         "comma-separated sweep (0.1,0.5,1: one comparison each, then removal against the fraction)")
    co.add_argument("--ulira", type=_parse_bool, default=False,
                    help="with --lira-shadows: U-LiRA too, each method's poisoned-model shadows unlearning all the "
                         "poisons with its best setting, the target's own task (one run of the method per shadow "
                         "pair, method and seed) (true/false)")
    co.add_argument("--hypotheses", type=_parse_bool, default=False,
                    help="also test the paper's two hypotheses on every seed (H1 model shift, H2 clean-gradient "
                         "subspace; one more training per seed, the clean control) and say what they found in the "
                         "headline (true/false; default false)")
    _add_scenario_args(co)
    co.set_defaults(func=cmd_compare)

    pl = sub.add_parser("plan", help="what a compare with these options will run (trainings, trials, example-passes) "
                                     "and about how much GPU time it takes; runs nothing")
    for action in co._actions:  # compare's own options that change its work, exactly as compare takes them
        if action.dest in PLAN_OPTIONS:
            pl._add_action(action)
    pl.add_argument("--examples-per-second", type=float, default=0.0,
                    help="training examples per second (forward + backward + step) of the GPU to plan for "
                         "(default 0: measured here, on a few batches of the scenario's model, shape and recipe)")
    _add_scenario_args(pl)
    pl.set_defaults(func=cmd_plan)

    an = sub.add_parser("analyze", help="why unlearning fails here (H1 model shift, H2 gradient subspace) and what a "
                                        "strong membership inference attack (LiRA) sees, per registered method")
    an.add_argument("--methods", default="all",
                    help="methods whose tuned best of the scenario is analysed (the version its alias best-<hash> "
                         "points at, which tune sets; without it, the newest registered one; a method with none is "
                         "left out): all or a comma-separated list")
    an.add_argument("--shadows", type=int, default=8,
                    help="LiRA shadow models, an even number, at least 6 (in pairs, one replicating the poisoned "
                         "model's training, one the retrained model's; fitted once per scenario and reused)")
    an.add_argument("--ulira", type=_parse_bool, default=True,
                    help="U-LiRA too: the poisoned-model shadows unlearn all the poisons with each method's "
                         "registered setting, the target's own task (one run of the method per shadow pair and "
                         "method; the shadow models are stored and reused) "
                         "(true/false)")
    an.add_argument("--gd-steps", type=int, default=50, help="plain GD steps on the retain set for H2's cosines")
    an.add_argument("--span-batches", type=int, default=32,
                    help="retain batches whose gradients span H2's clean-gradient subspace")
    _add_scenario_args(an)
    an.set_defaults(func=cmd_analyze)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep our progress lines readable
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("alembic", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # MLflow's store logs each database error with its traceback (a full disk: over a thousand lines); the error
    # itself reaches us as an exception and is reported in one line
    logging.getLogger("mlflow.store").setLevel(logging.CRITICAL)
    from .context import leave_a_core

    leave_a_core()  # before any torch work: see its docstring (and the provenance tag torch_threads)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own per-trial progress line replaces Optuna's
    optuna.logging.disable_default_handler()  # Optuna's records go through our handler, and its filter:
    optuna.logging.enable_propagation()
    for handler in logging.getLogger().handlers:
        handler.addFilter(_no_interrupt_tracebacks)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, handler) for sig, handler in
                ((signal.SIGTERM, _terminate), (signal.SIGINT, _interrupt))} if main_thread else {}
    try:
        return int(args.func(args))
    except UsageError as e:
        return _fail(f"error: {e}", 2)
    except Terminated:
        return _fail("terminated (SIGTERM): the run is marked KILLED and the study can be resumed", 143)
    except KeyboardInterrupt:
        return _fail("interrupted: the run is marked KILLED and the study can be resumed", 130)
    except Exception as e:
        from .unlearning import Diverged

        if isinstance(e, Diverged):  # a legitimate outcome of an aggressive setting, not a crash
            return _fail(f"error: {e}; try a smaller lr or budget", 1)
        full = _no_space(e)
        if full is not None:  # the store or the working directory filled up: say so, no traceback
            return _fail(f"error: no space left on device ({full}); free space and run the same command again "
                         "(nothing half-registered is kept)", 1)
        _fail(f"error: {type(e).__name__}: {' '.join(str(e).split())}", 1)
        raise
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _no_space(e: BaseException) -> str | None:
    """The message of a 'No space left on device' error anywhere in ``e``'s chain (MLflow and SQLAlchemy wrap it)."""
    import errno

    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            return f"writing {seen.filename2 or seen.filename}" if seen.filename else "writing a file"
        if "No space left on device" in str(seen):
            return "writing a file"
        if "database or disk is full" in str(seen):
            return "the tracking database is full"
        seen = seen.__cause__ or seen.__context__
    return None


def _fail(line: str, code: int) -> int:
    """Say why in one line on stderr and, under ``mlflow run``, on the launcher's run (tag ``error``)."""
    print(line, file=sys.stderr)
    if os.environ.get("MLFLOW_RUN_ID"):
        from . import tracking

        tracking.tag_launcher_run(line)
    return code


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that a terminated run ends like an interrupted one: its MLflow run
    KILLED with a reason, its trial failed, its queued child runs written. (SIGKILL cannot be caught: what it leaves
    is cleaned up when the study is next opened, see `tune.reconcile`.)"""


_INTERRUPTED: list[bool] = []  # set once SIGINT or SIGTERM arrived


def _terminate(signum: int, frame: Any) -> None:
    _INTERRUPTED.append(True)
    raise Terminated()


def _interrupt(signum: int, frame: Any) -> None:
    _INTERRUPTED.append(True)
    raise KeyboardInterrupt()


def _no_interrupt_tracebacks(record: logging.LogRecord) -> bool:
    """Once interrupted, drop Optuna's reports of the interrupted trial (a 50-line traceback and "failed with value
    None"): the interrupt itself is reported in one line, and the trial is recorded as failed in the study."""
    exc = record.exc_info[0] if record.exc_info else None
    if exc is not None and issubclass(exc, KeyboardInterrupt):
        return False
    return not (_INTERRUPTED and record.name.startswith("optuna"))


if __name__ == "__main__":
    sys.exit(main())
