"""What a ``compare`` will run, in example-passes and GPU time, before anything is spent (``plan``).

Counts what `compare.run_compare` does for each scenario seed, in the unit compute is accounted in everywhere
(`compute`: one forward+backward of one example; a forward-only pass is `compute.FORWARD_ONLY_COST`):

- the two references, exactly: the poisoned model, ``epochs x |S_corr|``, and the retrained one, ``epochs x
  |retain|`` = the retraining cost R that budgets are fractions of (what `store` logs as ``train_compute``);
  ``hypotheses``: the clean control, ``epochs x |retain|``; ``lira_shadows``: half the shadow models ``epochs x
  |S_corr|`` (replicates of the poisoned model), half ``epochs x |retain|`` (of the retrained one);
- per method, its study's ``n_trials`` trials, each at most ``budget_max x R`` (the compute meter's limit: a
  trial's budget is drawn log-uniformly from [budget_max / 10, budget_max], and its method stops before it would
  overrun), and one more run of the best trial, which `tune` re-creates for its model;
- evaluation, not metered by the methods: each judged model (the references, every trial and every re-run) is scored
  by forward passes over the test, retain and forget sets and by the attack's own score (for Gaussian poisoning one
  input gradient per poison); three more attack scores per study (the retrained model's, and the poisoned and best
  models' for the plots); and, for pruning, the attack's score after each epoch of a trial: at most, assuming every
  epoch passes over at least the forget set (true of every method here: GA's epoch is the forget set, SSD runs
  one); about, one epoch per pass over the retain set (GA: over the forget set, `FORGET_EPOCH_METHODS`).

"At most" sums every trial at ``budget_max``; "about" takes each trial at the mean of the log-uniform budget,
``0.9 budget_max / ln 10`` (0.39 budget_max; TPE then moves towards what removes most, and pruning stops trials
early, so this is a guide, not a bound). Not counted: crafting by a model-aware attack (Witches' Brew trains
surrogates, Gradient Canceling solves for its poisons), LiRA's and the hypotheses' scoring passes, and the
tracking. A study already finished in the storage is reused by `compare` and costs nothing: the plan assumes an
empty store.

GPU time = example-passes / examples per second, the training throughput (forward + backward + step, the preset's
model, batch size and precision) either given (``--examples-per-second``) or measured here (`measure_throughput`)
on a few batches of the dataset's shape.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from .compute import FORWARD_ONLY_COST, retrain_cost
from .scenario import ScenarioConfig

#: Built-in image datasets' sizes, so that a plan needs no download: (n_train, n_test, input shape, classes).
KNOWN_SIZES: dict[str, tuple[int, int, tuple[int, ...], int]] = {"cifar10": (50_000, 10_000, (3, 32, 32), 10)}
#: Methods whose epoch is one pass over the forget set (the others' is one over the retain set, or SSD's single
#: pass): what the "about" column takes for the number of per-epoch pruning scores a trial computes.
FORGET_EPOCH_METHODS = ("ga",)
#: The mean of a budget drawn log-uniformly from [b / 10, b], as a fraction of b: (1 - 1/10) / ln 10.
MEAN_BUDGET_FRACTION = 0.9 / math.log(10)


@dataclass(frozen=True)
class Sizes:
    """What the plan needs of a dataset; ``data`` is the loaded dataset where the sizes had to be read from it."""

    n_train: int
    n_test: int
    input_shape: tuple[int, ...]
    n_classes: int
    vocab_size: int = 0
    data: Any = field(default=None, compare=False, repr=False)


def dataset_sizes(cfg: ScenarioConfig) -> Sizes:
    """The dataset's sizes: from `KNOWN_SIZES` for a built-in image dataset (and its ``@n_train,n_test`` subsets),
    which then need not be on this machine; else loaded."""
    from .data import _parse, load_dataset

    base, prefix, _, subset = _parse(cfg.dataset)
    if prefix is None and base in KNOWN_SIZES:
        n_train, n_test, shape, n_classes = KNOWN_SIZES[base]
        if subset is not None:
            from .errors import UsageError

            if subset[0] > n_train or subset[1] > n_test:
                raise UsageError(f"dataset {cfg.dataset!r}: a subset larger than {base} ({n_train} train, {n_test} "
                                 f"test); valid: @1..{n_train},1..{n_test}")
            n_train, n_test = subset
        return Sizes(n_train, n_test, shape, n_classes)
    data = load_dataset(cfg.dataset, cfg.model, cfg.train.max_length)
    return Sizes(len(data.x_train), len(data.x_test), data.input_shape, data.n_classes, data.vocab_size, data)


@dataclass(frozen=True)
class Row:
    """One line of the plan: ``runs`` runs of at most (``bound``) or exactly ``each`` example-passes; ``about`` is
    the typical cost of one run where it differs from ``each``."""

    what: str
    runs: int
    each: float
    bound: bool = False
    about: float | None = None

    @property
    def total(self) -> float:
        return self.runs * self.each

    @property
    def about_total(self) -> float:
        return self.runs * (self.each if self.about is None else self.about)


@dataclass(frozen=True)
class ScenarioPlan:
    """One scenario seed's work (every seed's is the same)."""

    cfg: ScenarioConfig
    sizes: Sizes
    n_poison: int
    n_corrupted: int
    n_retain: int
    retrain_cost: float
    rows: list[Row]
    notes: list[str]

    @property
    def total(self) -> float:
        return sum(r.total for r in self.rows)

    @property
    def about_total(self) -> float:
        return sum(r.about_total for r in self.rows)


@dataclass(frozen=True)
class Plan:
    scenarios: list[ScenarioPlan]
    seeds: int
    methods: list[str]
    n_trials: int
    budget_max: float

    @property
    def total(self) -> float:
        """Every seed of every scenario, every trial at ``budget_max``: an upper bound on the metered work."""
        return self.seeds * sum(s.total for s in self.scenarios)

    @property
    def about_total(self) -> float:
        return self.seeds * sum(s.about_total for s in self.scenarios)


def attack_score_cost(attack: Any, n_poison: int, n_test: int) -> float:
    """Example-passes of one evaluation of the attack's own metric: Gaussian poisoning's GUS takes one input
    gradient per poison (a forward and a backward); the others are counted as a forward pass over the test set
    (the backdoor's triggered test inputs, Gradient Canceling's test error; Witches' Brew's few targets cost less)."""
    return float(n_poison) if attack.name == "gaussian" else FORWARD_ONLY_COST * n_test


def plan_scenario(cfg: ScenarioConfig, sizes: Sizes, methods: list[str], n_trials: int, budget_max: float,
                  lira_shadows: int = 0, hypotheses: bool = False, studies_per_method: int = 1) -> ScenarioPlan:
    """One seed of ``cfg`` as `compare` runs it (see the module docstring for what is counted and how);
    ``studies_per_method``: a sweep of partial discovery runs each method's study once per discovered fraction."""
    attack = cfg.make_attack()
    k = attack.n_poisons(sizes.n_train)
    n_corr, n_retain = (sizes.n_train + k, sizes.n_train) if attack.adds_points else (sizes.n_train,
                                                                                      sizes.n_train - k)
    epochs = cfg.train.epochs
    r = retrain_cost(epochs, n_retain)
    rows = [Row(f"poisoned model ({epochs} epochs x {n_corr:,})", 1, float(epochs * n_corr)),
            Row(f"retrained reference ({epochs} x {n_retain:,} = R)", 1, r)]
    if hypotheses:
        rows.append(Row(f"clean control, hypotheses ({epochs} x {n_retain:,})", 1, r))
    if lira_shadows:  # replicate pairs: one of the poisoned model's training, one of the retrained model's
        rows.append(Row(f"LiRA shadow models, poisoned replicates ({epochs} x {n_corr:,})", lira_shadows // 2,
                        float(epochs * n_corr)))
        rows.append(Row(f"LiRA shadow models, retrained replicates ({epochs} x {n_retain:,})", lira_shadows // 2, r))
    trial = budget_max * r
    about = trial * MEAN_BUDGET_FRACTION
    f = studies_per_method
    per = f", {f} discovered fractions" if f > 1 else ""
    for m in methods:
        rows.append(Row(f"{m}: trials (each <= {budget_max:g} R{per})", n_trials * f, trial, bound=True, about=about))
    rows.append(Row(f"best trial re-run, one per method{' and fraction' if f > 1 else ''}", len(methods) * f, trial,
                    bound=True, about=about))
    score = attack_score_cost(attack, k, sizes.n_test)
    judged = 2 + len(methods) * f * (n_trials + 1)
    rows.append(Row("evaluation of each judged model", judged,
                    FORWARD_ONLY_COST * (sizes.n_test + n_retain + k) + score))
    rows.append(Row("attack scores for the verdict and plots", 3 * len(methods) * f, score))
    if k:
        # pruning: one attack score per epoch; an epoch passes over >= k examples, so a trial runs <= trial/k epochs;
        # about: as many epochs as an average budget buys, over the forget set (GA) or the retain set (the others)
        about_checks = sum(about / (k if m in FORGET_EPOCH_METHODS else max(n_retain, k)) * score for m in methods)
        rows.append(Row("per-epoch pruning scores, per trial", len(methods) * n_trials * f, trial / k * score,
                        bound=True, about=about_checks / len(methods)))
    notes = []
    if attack.name in ("witches_brew", "gradient_canceling"):
        notes.append(f"{attack.name} crafts its poisons against models of its own (not counted)")
    return ScenarioPlan(cfg, sizes, k, n_corr, n_retain, r, rows, notes)


def make_plan(bases: list[ScenarioConfig], seeds: int, methods: list[str], n_trials: int, budget_max: float,
              lira_shadows: int = 0, hypotheses: bool = False, studies_per_method: int = 1) -> Plan:
    sizes: dict[tuple[str, str, int], Sizes] = {}
    scenarios = []
    for cfg in bases:  # one per attack; the data are the same for all
        key = (cfg.dataset, cfg.model, cfg.train.max_length)
        if key not in sizes:
            sizes[key] = dataset_sizes(cfg)
        scenarios.append(plan_scenario(cfg, sizes[key], methods, n_trials, budget_max, lira_shadows, hypotheses,
                                       studies_per_method))
    return Plan(scenarios, seeds, list(methods), n_trials, budget_max)


def measure_throughput(cfg: ScenarioConfig, sizes: Sizes, device: torch.device, batches: int = 2) -> float:
    """Training examples per second of ``cfg``'s model and recipe (batch size, precision) on ``device``: one
    warm-up batch, then ``batches`` batches timed through `training.train`. Real rows where the dataset was
    loaded, else uniform random images of its shape (speed does not depend on the pixels)."""
    from .context import RunContext
    from .models import ModelSpec, create_model
    from .training import train

    n = cfg.train.batch_size * batches
    if sizes.data is not None:
        idx = torch.arange(n) % len(sizes.data.x_train)
        x, y = sizes.data.x_train[idx], sizes.data.y_train[idx]
    else:
        g = torch.Generator().manual_seed(0)
        x, y = torch.rand((n, *sizes.input_shape), generator=g), torch.randint(0, sizes.n_classes, (n,), generator=g)
    recipe = replace(cfg.train, epochs=1)
    model = create_model(ModelSpec(cfg.model, sizes.input_shape, sizes.n_classes, sizes.vocab_size), seed=0)
    ctx = RunContext(seed=0, device=device)
    train(model, x[:cfg.train.batch_size], y[:cfg.train.batch_size], recipe, ctx)  # allocator, kernels, threads
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    train(model, x, y, recipe, ctx)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return n / (time.perf_counter() - t0)


def _n(x: float) -> str:
    return f"{x:,.0f}"


def _hours(passes: float, per_s: float, unit: str) -> str:
    h = passes / per_s / 3600
    return f"{h:,.1f} {unit}-hours" if h >= 1 else f"{h * 60:,.1f} {unit}-minutes"


def render(plan: Plan, per_s: float, source: str, label: str = "", unit: str = "GPU") -> str:
    """The plan as a table per scenario, the totals, and one line of time at ``per_s`` examples/s (in ``unit``
    hours: ``GPU``, or ``CPU`` for a speed measured on a CPU)."""
    lines = []
    for s in plan.scenarios:
        cfg = s.cfg
        lines.append(f"plan{label}: compare on {cfg.dataset} ({s.sizes.n_train:,} train / {s.sizes.n_test:,} test), "
                     f"{cfg.model}, {cfg.attack} ({s.n_poison:,} poisons), {cfg.train.epochs} epochs; "
                     f"{plan.seeds} seeds x {len(plan.methods)} methods x {plan.n_trials} trials, trial budgets "
                     f"log-uniform in [{plan.budget_max / 10:g}, {plan.budget_max:g}] R, R = {_n(s.retrain_cost)} "
                     "example-passes")
        w = max(len(r.what) for r in s.rows)
        lines.append(f"  {'per seed':<{w}}  {'runs':>6}  {'example-passes each':>20}  {'at most':>15}  {'about':>15}")
        for r in s.rows:
            each = ("<= " if r.bound else "") + _n(r.each)
            lines.append(f"  {r.what:<{w}}  {r.runs:>6,}  {each:>20}  {_n(r.total):>15}  {_n(r.about_total):>15}")
        lines.append(f"  {'one seed':<{w}}  {'':>6}  {'':>20}  {_n(s.total):>15}  {_n(s.about_total):>15}")
        lines.append(f"  {f'all {plan.seeds} seeds':<{w}}  {'':>6}  {'':>20}  {_n(plan.seeds * s.total):>15}  "
                     f"{_n(plan.seeds * s.about_total):>15}")
        lines += [f"  note: {n}" for n in s.notes]
    if len(plan.scenarios) > 1:
        lines.append(f"all {len(plan.scenarios)} attacks: at most {_n(plan.total)}, about {_n(plan.about_total)} "
                     "example-passes")
    lines.append(f"about {_hours(plan.about_total, per_s, unit)} (at most {_hours(plan.total, per_s, unit)}) at "
                 f"{per_s:,.0f} examples/s ({source})")
    return "\n".join(lines)


__all__ = ["Plan", "Row", "ScenarioPlan", "Sizes", "dataset_sizes", "make_plan", "measure_throughput", "plan_scenario",
           "render"]
