"""Command line: ``python -m unlearn_search <command>`` (the MLproject entry points call the same commands).

The only layer that turns exceptions into exit codes: a `UsageError` becomes one line on stderr and exit status 2,
before anything is written to MLflow.
"""

from __future__ import annotations

import argparse
import logging
import sys
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
    from .attacks.gaussian import GaussianConfig
    from .training import OPTIMIZERS, TrainConfig

    t, g = TrainConfig(), GaussianConfig()
    s = p.add_argument_group("scenario")
    s.add_argument("--dataset", default="digits", help="dataset name (default: digits)")
    s.add_argument("--model", default="mlp", help="mlp, cnn or timm:<architecture> (default: mlp)")
    s.add_argument("--attack", default="gaussian", help="poisoning attack (default: gaussian)")
    s.add_argument("--poison-fraction", type=float, default=g.poison_fraction, help="fraction of training points")
    s.add_argument("--eps", type=float, default=g.eps, help="Gaussian noise standard deviation (raw [0,1] inputs)")
    s.add_argument("--epochs", type=int, default=t.epochs, help="training epochs of the reference recipe")
    s.add_argument("--batch-size", type=int, default=t.batch_size)
    s.add_argument("--optimizer", default=t.optimizer, help=f"one of {', '.join(OPTIMIZERS)}")
    s.add_argument("--lr", type=float, default=t.lr)
    s.add_argument("--momentum", type=float, default=t.momentum)
    s.add_argument("--weight-decay", type=float, default=t.weight_decay)
    s.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
    p.add_argument("--experiment", default=None, help="MLflow experiment (default: unlearn_search)")


def scenario_from_args(a: argparse.Namespace) -> Any:
    from .scenario import ScenarioConfig
    from .training import TrainConfig

    train = TrainConfig(**{f.name: getattr(a, f.name) for f in fields(TrainConfig)})
    attack_params = {"poison_fraction": a.poison_fraction, "eps": a.eps}
    return ScenarioConfig(dataset=a.dataset, model=a.model, attack=a.attack, attack_params=attack_params,
                          train=train, seed=a.seed)


def cmd_poison(a: argparse.Namespace) -> int:
    from . import tracking
    from .context import RunContext, select_device
    from .store import ROLES, ensure_references

    cfg = scenario_from_args(a)  # validates every parameter before anything is written
    ctx = RunContext(seed=cfg.seed, device=select_device(a.device))
    tracking.configure(a.experiment)
    with tracking.run(f"poison-{cfg.hash[:8]}", tags={"entry_point": "poison", "scenario_hash": cfg.hash}):
        tracking.log_params(cfg.to_flat())
        tracking.set_tags({"device": str(ctx.device)})
        refs = ensure_references(cfg, ctx)
        tracking.set_tags({"reused": str(refs.reused).lower(), "scenario_run_id": refs.scenario_run_id,
                           **{f"{r}_model": f"{v.name}/{v.version}" for r, v in refs.versions.items()}})
        for role in ROLES:
            tracking.log_metrics(refs.metrics[role], prefix=f"{role}.")
    _print_references(refs)
    return 0


def _print_references(refs: Any) -> None:
    keys = ["test_acc", "retain_acc", "forget_acc", "gus", "gus_z", "gus_pvalue", "gus_tpr_at_1fpr", "gus_auc",
            "mia_auc"]
    lines = [f"{'metric':<16}" + "".join(f"{r:>12}" for r in refs.metrics)]
    for k in keys:
        if all(k in m for m in refs.metrics.values()):
            lines.append(f"{k:<16}" + "".join(f"{m[k]:>12.4g}" for m in refs.metrics.values()))
    state = "reused" if refs.reused else "trained"
    print(f"scenario {refs.scenario.config.hash} ({state}):\n" + "\n".join(lines))


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="unlearn_search", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and results")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    poison = sub.add_parser("poison", help="build a scenario: train and register the poisoned and retrained models")
    _add_scenario_args(poison)
    poison.set_defaults(func=cmd_poison)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("alembic", "mlflow.store", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
