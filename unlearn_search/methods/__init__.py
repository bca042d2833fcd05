"""Unlearning methods by name, one module each, all with one contract.

A method is a function ``run(model, splits, cfg, budget, ctx, on_epoch=None) -> UnlearnResult``:

- ``model`` is the poisoned model; the method works on a deep copy and never mutates it;
- ``splits`` holds the forget set (the poisons, as trained on) and the retain set;
- ``cfg`` is the method's own frozen config dataclass (defaults from the reference code, docs/references.md;
  validated on construction so a bad value fails before any work);
- ``budget`` is the compute the method may consume, a fraction of retraining from scratch (docs/paper.md section 2),
  checked before every batch, so a method overruns by less than one batch; what it consumed is reported;
- ``on_epoch(epoch, model, values)`` is called after each epoch; the entry point binds it to logging, the tuner
  to ``trial.report`` (it may raise to stop the method, e.g. an Optuna pruning signal).

Methods never read files, log, or evaluate themselves. ``search_space(trial)`` next to each method returns a
config's keyword arguments drawn from an Optuna trial (duck-typed: any object with ``suggest_*``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from ..compute import ComputeMeter
from ..context import RunContext
from ..errors import check_range
from ..registry import Registry

#: Called after each epoch with (epoch index, current model, values such as the epoch's mean loss).
EpochCallback = Callable[[int, nn.Module, dict[str, float]], None]


@dataclass(frozen=True)
class Splits:
    """The sets an unlearning method sees: forget = the poisons as trained on; retain = the rest of S_corr."""

    x_forget: torch.Tensor
    y_forget: torch.Tensor
    x_retain: torch.Tensor
    y_retain: torch.Tensor

    @property
    def n_forget(self) -> int:
        return len(self.x_forget)

    @property
    def n_retain(self) -> int:
        return len(self.x_retain)

    def full(self) -> tuple[torch.Tensor, torch.Tensor]:
        """retain ∪ forget: the whole training set the poisoned model saw (S_corr)."""
        return torch.cat([self.x_retain, self.x_forget]), torch.cat([self.y_retain, self.y_forget])


@dataclass(frozen=True)
class Budget:
    """Compute allowance: ``fraction`` of ``retrain_cost`` example-passes (fraction in (0, 1])."""

    fraction: float
    retrain_cost: float

    def __post_init__(self) -> None:
        check_range("budget", self.fraction, low=0, high=1, low_open=True)
        check_range("retrain_cost", self.retrain_cost, low=0, low_open=True)

    @property
    def limit(self) -> float:
        return self.fraction * self.retrain_cost

    def meter(self) -> ComputeMeter:
        return ComputeMeter(self.limit)


@dataclass
class UnlearnResult:
    model: nn.Module
    compute_used: float  # example-passes actually consumed
    info: dict[str, float] = field(default_factory=dict)  # e.g. epochs / steps run


class MethodFn(Protocol):
    def __call__(
        self,
        model: nn.Module,
        splits: Splits,
        cfg: Any,
        budget: Budget,
        ctx: RunContext,
        on_epoch: EpochCallback | None = None,
    ) -> UnlearnResult: ...


@dataclass(frozen=True)
class Method:
    """A registered method: its name, config class, algorithm and search space."""

    name: str
    Config: type
    run: MethodFn
    search_space: Callable[[Any], dict[str, Any]] | None
    summary: str
    #: Checks a config against the model it will run on (e.g. EU-k's k against the model's units) before any work
    #: starts, raising `UsageError`; called by the entry points on an untrained model of the scenario's architecture.
    check: Callable[[Any, nn.Module], None] = lambda cfg, model: None
    #: The entry point's default budget (fraction of retraining); 1.0 for ``retrain``, a complete retraining.
    default_budget: float = 0.1
    #: The top-level package that registered it: ``unlearn_search`` for a built-in method, else a plugin's.
    package: str = "unlearn_search"

    @property
    def builtin(self) -> bool:
        return self.package == "unlearn_search"

    def config(self, **params: Any) -> Any:
        """The config from keyword parameters (unknown names raise `UsageError`)."""
        from dataclasses import fields

        from ..errors import UsageError

        valid = {f.name for f in fields(self.Config)}
        unknown = sorted(set(params) - valid)
        if unknown:
            raise UsageError(
                f"unknown parameter(s) {', '.join(unknown)} for method {self.name!r}; valid: {', '.join(sorted(valid))}"
            )
        return self.Config(**params)


class _MethodRegistry(Registry[Method]):
    """The method registry; an unknown name lists the built-in methods and the plugins' apart."""

    def valid(self) -> str:
        builtin = [n for n in self.names() if self._items[n].builtin]
        plugins = [f"{n} (plugin {self._items[n].package})" for n in self.names() if not self._items[n].builtin]
        return ", ".join(builtin) + (f"; plugins: {', '.join(plugins)}" if plugins else "; plugins: none installed")


METHODS: Registry[Method] = _MethodRegistry("method")


def register_method(
    name: str,
    config: type,
    search_space: Callable[[Any], dict[str, Any]] | None = None,
    check: Callable[[Any, nn.Module], None] | None = None,
    default_budget: float = 0.1,
) -> Callable[[MethodFn], MethodFn]:
    """Decorator registering ``fn`` as method ``name`` with its config class, search space and model check."""

    def deco(fn: MethodFn) -> MethodFn:
        import sys

        doc = (sys.modules[fn.__module__].__doc__ or name).strip().splitlines()[0]
        method = Method(name, config, fn, search_space, doc, check or (lambda cfg, model: None), default_budget,
                        package=fn.__module__.split(".")[0])
        METHODS.register(name)(method)
        return fn

    return deco


# One import line per method module (each registers itself).
from . import bad_teacher as _bad_teacher  # noqa: E402,F401
from . import cf_k as _cf_k  # noqa: E402,F401
from . import eu_k as _eu_k  # noqa: E402,F401
from . import ga as _ga  # noqa: E402,F401
from . import gd as _gd  # noqa: E402,F401
from . import l1_sparse as _l1_sparse  # noqa: E402,F401
from . import neggrad_plus as _neggrad_plus  # noqa: E402,F401
from . import ngd as _ngd  # noqa: E402,F401
from . import none as _none  # noqa: E402,F401
from . import potion as _potion  # noqa: E402,F401
from . import retrain as _retrain  # noqa: E402,F401
from . import salun as _salun  # noqa: E402,F401
from . import scrub as _scrub  # noqa: E402,F401
from . import ssd as _ssd  # noqa: E402,F401

#: The Python entry-point group through which an installed package adds methods (docs/plugins.md): each entry
#: point names a module that registers its method(s) with `register_method` when imported.
PLUGIN_GROUP = "unlearn_search.methods"
#: Plugins that failed to load: entry point name -> the one-line reason (they are left out; the rest work).
PLUGIN_ERRORS: dict[str, str] = {}


def _load_plugins() -> None:
    import logging
    from importlib.metadata import entry_points

    for ep in entry_points(group=PLUGIN_GROUP):
        try:
            ep.load()
        except Exception as e:  # a broken plugin must not take the built-in methods down with it
            first = (str(e).strip().splitlines() or [""])[0][:300]
            reason = f"{type(e).__name__}: {first}" if first else type(e).__name__
            PLUGIN_ERRORS[ep.name] = reason
            logging.getLogger(__name__).warning("unlearn_search: plugin %r (%s) failed to load and is left out: %s",
                                                ep.name, ep.value, reason)


_load_plugins()

__all__ = ["METHODS", "PLUGIN_GROUP", "Budget", "EpochCallback", "Method", "Splits", "UnlearnResult",
           "register_method"]
