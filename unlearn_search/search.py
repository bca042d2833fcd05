"""Optuna search for each method's best-case poison removal (the only module that imports optuna).

A trial draws the method's hyperparameters from the search space defined next to the method, plus the compute
budget itself (log-uniform in [budget_max / 10, budget_max]), runs the method on the scenario's poisoned model and
scores it like the references. The search aims at retraining, not past it: single mode maximises ``objective``,
closeness to the null on the *selection part* of the units (`verdict.objective`: -|1 - removal|, so an overshoot
to removal 1.9 is as far from retraining as 0.1), subject to the utility constraint
``test_acc >= poisoned test_acc - utility_tolerance`` (Optuna's ``Trial.set_constraint``; infeasible trials are never
chosen as best), and prunes with the objective measured after each epoch. Pareto mode maximises the objective and
minimises the budget used, giving a front. The verdict part of the units is never seen by the search
(`unlearning.Yardstick`).

The objective does not know about MLflow: a `TrialReporter` (bound to nested MLflow runs by the CLI) is told when a
trial starts and how it ended.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import optuna
from optuna.storages._heartbeat import BaseHeartbeat  # not exported by optuna.storages
from torch import nn

from . import stopping, verdict
from .context import RunContext
from .errors import UsageError, check_choice, check_range
from .methods import METHODS, Method
from .models import max_k
from .samplers import SAMPLERS, TrialSeededSampler
from .scenario import Scenario
from .unlearning import Discovery, Diverged, Yardstick, check_discovered_fraction, unlearn
from .workers import worker_id

log = logging.getLogger(__name__)

MODES = ("single", "pareto")
#: A local journal file: several processes on one machine can share it (file locks), and it costs about a tenth of
#: what a SQLite database costs per trial (about 17 ms against 140 ms measured here). For many machines, give a
#: database URL (postgresql://..., mysql://...).
DEFAULT_STORAGE = "optuna_journal.log"
RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "oracle", "mssql")
#: Name of the trial constraint (Optuna's ``Trial.set_constraint``): poisoned test_acc - tolerance - test_acc,
#: <= 0 when utility is kept.
CONSTRAINT = "utility"


@dataclass(frozen=True)
class TuneConfig:
    method: str
    n_trials: int = 20
    timeout: float = 0.0  # seconds; 0 = no limit
    budget_max: float = 0.1
    seed: int = 0
    storage: str = DEFAULT_STORAGE
    study_name: str = ""  # "" = derived from method, mode and scenario
    utility_tolerance: float = 0.02
    mode: str = "single"
    discovered_fraction: float = 1.0  # partial discovery: the fraction of the poisons the method is told
    select_fraction: float = verdict.SELECT_FRACTION  # the units the search selects on; the rest judge
    equivalence_margin: float = verdict.EQUIVALENCE_MARGIN  # "removed": residue within this x the poisoned one's
    stop: str = "fixed"  # "settled": stop when the best case settles (`stopping`), n_trials the cap
    min_trials: int = stopping.MIN_TRIALS
    patience: int = stopping.PATIENCE
    sampler: str = "tpe"
    # settings a new study tries first (`compare`'s warm start: the method's best on its other seeds)
    warm_start: tuple[dict[str, Any], ...] = ()
    # compare: warm-start each seed's study from the method's earlier seeds (off by default: measured to make settled
    # studies stop sooner at worse best cases, docs/tune.md "Learning across seeds")
    warm_start_seeds: bool = False

    @property
    def rule(self) -> stopping.StopRule:
        return stopping.StopRule(self.stop, self.min_trials, self.patience)

    @property
    def default_kind(self) -> bool:
        """A study of the scenario's default kind (every poison told, one objective, the default split, margin and
        sampler), whose best the registry's aliases (``best-<hash>``, compare's ``best`` and ``seed<n>``) name: a
        study of another kind never moves them (its objective or verdict is another)."""
        return (self.discovered_fraction >= 1 and self.mode == "single" and self.sampler == "tpe"
                and self.select_fraction == verdict.SELECT_FRACTION
                and self.equivalence_margin == verdict.EQUIVALENCE_MARGIN)

    def __post_init__(self) -> None:
        METHODS.get(self.method)
        check_discovered_fraction(self.discovered_fraction)
        verdict.check_fraction("select_fraction", self.select_fraction)
        verdict.check_fraction("equivalence_margin", self.equivalence_margin)
        check_range("n_trials", self.n_trials, low=1)
        check_range("timeout", self.timeout, low=0)
        check_range("budget_max", self.budget_max, low=0, high=1, low_open=True)
        check_range("utility_tolerance", self.utility_tolerance, low=0, high=1)
        check_choice("mode", self.mode, MODES)
        check_choice("sampler", self.sampler, SAMPLERS)
        self.rule.check_cap(self.n_trials)

    def name_for(self, scenario_hash: str) -> str:
        suffix = "" if self.mode == "single" else f"-{self.mode}"
        if self.discovered_fraction < 1:  # another objective: its own study
            suffix += f"-discovered{self.discovered_fraction:g}"
        if self.select_fraction != verdict.SELECT_FRACTION:  # another selection part: another objective
            suffix += f"-select{self.select_fraction:g}"
        if self.equivalence_margin != verdict.EQUIVALENCE_MARGIN:  # trials store their verdict at this margin
            suffix += f"-margin{self.equivalence_margin:g}"
        if self.sampler != "tpe":  # another sampler's trials: a study of its own
            suffix += f"-{self.sampler}"
        # "-c": the objective is closeness to the null on the selection part (studies made before maximised removal
        # over all poisons; their values are not comparable, so they are not resumed)
        return self.study_name or f"{self.method}{suffix}-{scenario_hash[:12]}-c"


class TrialReporter(Protocol):
    def started(self, trial: optuna.Trial, params: dict[str, Any]) -> None: ...

    def finished(self, trial: optuna.Trial, state: str, metrics: dict[str, float], reason: str) -> None: ...


def expand_storage(url: str) -> str:
    """``$VAR`` / ``${VAR}`` in a storage URL are taken from the environment, so that a password can stay out of
    command lines and of the params ``mlflow run`` logs: ``postgresql://bob:${PGPASSWORD}@db/optuna``."""
    import os

    return os.path.expandvars(url)


#: The system attribute of a trial (run through a gRPC proxy) that holds its worker's last heartbeat, in seconds
#: since the epoch of that worker's clock.
HEARTBEAT_ATTR = "unlearn_search:heartbeat"


class GrpcProxyWithHeartbeat(optuna.storages.GrpcStorageProxy, BaseHeartbeat):
    """Optuna's gRPC storage proxy client with a heartbeat, which the proxy protocol lacks.

    Optuna's heartbeat lives in `optuna.storages.RDBStorage` (a table written by each worker): a client of the proxy
    writes none, so a trial of a worker killed on another host would stay RUNNING for good, even for workers that
    open the database directly (their check skips trials without a heartbeat row). Here the worker's beat is a
    trial system attribute (`HEARTBEAT_ATTR`, written every ``interval`` seconds by Optuna's own heartbeat thread
    during `optuna.Study.optimize`), and the next proxy client that opens the study (`fail_dead_trials`, and
    Optuna before each trial) fails a RUNNING trial whose beat is older than ``grace`` seconds. The beat is the
    worker's wall clock, compared with the checker's: hosts' clocks must agree to within ``grace - interval``
    (NTP does).
    """

    def __init__(self, *, host: str, port: int, interval: int, grace: int) -> None:
        super().__init__(host=host, port=port)
        self.interval, self.grace = interval, grace

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another worker failed the trial (its beats were late); this worker's tell is refused anyway
        except Exception as e:  # a missed beat (the proxy restarting): the next one retries, the thread must live
            log.warning("heartbeat of trial id %d not recorded: %s", trial_id, (str(e).strip().splitlines() or [""])[0])

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        running = self.get_all_trials(study_id, deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        # a trial without a beat (its worker killed before the first one, or not a heartbeat client) is left alone,
        # as RDBStorage leaves a trial without a heartbeat row
        return [t._trial_id for t in running if now - float(t.system_attrs.get(HEARTBEAT_ATTR, now)) > self.grace]

    def get_heartbeat_interval(self) -> int:
        return self.interval

    def get_heartbeat_stale_trial_callback(self) -> None:
        return None


def _grpc_storage(url: str, timeout_s: float = 10.0) -> optuna.storages.BaseStorage:
    """``grpc://host:port``: Optuna's gRPC storage proxy (`optuna.storages.GrpcStorageProxy`), for more workers than
    one database serves; the proxy server (`optuna.storages.run_grpc_proxy_server`) runs in front of a database
    storage. Workers beat through the proxy (`GrpcProxyWithHeartbeat`), so a dead worker's trial is failed on any
    host. Checked to answer, and its storage with it, before any work: otherwise one `UsageError`."""
    from .redact import redact_uri

    parts = urlsplit(expand_storage(url))
    try:
        host, port = parts.hostname or "localhost", parts.port or 13000
    except ValueError:
        raise UsageError(f"storage {redact_uri(url)!r} cannot be used; valid: grpc://host:port") from None
    try:
        import grpc
    except ImportError:
        raise UsageError(f"storage {redact_uri(url)!r} needs the gRPC client: pip install -e \".[grpc]\"") from None
    heartbeat = heartbeat_interval()
    channel = grpc.insecure_channel(f"{host}:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
    except grpc.FutureTimeoutError:
        raise UsageError(f"storage {redact_uri(url)!r} cannot be used: no gRPC storage proxy answered at "
                         f"{host}:{port} within {timeout_s:g} s") from None
    finally:
        channel.close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = GrpcProxyWithHeartbeat(host=host, port=port, interval=heartbeat, grace=3 * heartbeat)
    try:  # one cheap call through to the database: a proxy whose database is down answers the handshake alone
        storage.get_study_id_from_name("unlearn_search: connection check")
    except KeyError:
        pass
    except grpc.RpcError as e:
        storage.close()
        detail = (str(e.details() or e.code()).strip().splitlines() or ["no detail"])[0]
        raise UsageError(f"storage {redact_uri(url)!r} cannot be used: the gRPC storage proxy at {host}:{port} "
                         f"answered {e.code().name}: {detail[:300]}") from None
    return storage


def heartbeat_interval() -> int:
    """Seconds between a worker's heartbeats on a database storage (``UNLEARN_SEARCH_HEARTBEAT_S``, default 60); a
    trial whose worker missed three of them is failed by the next worker that opens the study."""
    import os

    text = os.environ.get("UNLEARN_SEARCH_HEARTBEAT_S", "60")
    if not text.strip().isdigit() or int(text) < 1:
        raise UsageError(f"UNLEARN_SEARCH_HEARTBEAT_S={text!r} is not a whole number of seconds; valid: 1 or more")
    return int(text)


def connect_storage(url: str, attempts: int = 4) -> optuna.storages.BaseStorage:
    """The Optuna storage at ``url``: a database URL (``sqlite:///``, ``postgresql://``, ``mysql://``, ...) gives an
    RDB storage with a heartbeat, so that a dead worker's trial is marked failed; anything else is the path of a
    journal file (``optuna.storages.journal``), shared by processes on one machine.

    Workers that start together may race to create a database schema; a few retries absorb that. A storage that
    still cannot be used raises `UsageError` (password redacted).
    """

    from .redact import redact, redact_uri

    scheme = urlsplit(url).scheme.split("+")[0]
    if scheme == "grpc":
        return _grpc_storage(url)
    if scheme not in RDB_SCHEMES:
        from pathlib import Path

        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(expand_storage(url).removeprefix("file:"))
        if scheme not in ("", "file") or not path.parent.is_dir():
            valid = ("a journal file path in an existing directory, a database URL (" + ", ".join(RDB_SCHEMES)
                     + "), or grpc://host:port")
            raise UsageError(f"storage {redact_uri(url)!r} cannot be used; valid: {valid}")
        return JournalStorage(JournalFileBackend(str(path)))
    heartbeat = heartbeat_interval()
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(expand_storage(url), heartbeat_interval=heartbeat,
                                                  grace_period=3 * heartbeat)
        except Exception as e:
            race = "UNIQUE constraint" in str(e) or "already exists" in str(e) or "database is locked" in str(e)
            if race and attempt + 1 < attempts:
                time.sleep(0.5 * (attempt + 1))
                continue
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            first = redact(redact(first, expand_storage(url)), url)
            if "DB access module" in first or isinstance(e, ImportError):  # no driver for this database
                extra = "postgres" if scheme == "postgresql" else None
                first += (f"; install the driver: pip install -e \".[{extra}]\"" if extra
                          else f"; install a SQLAlchemy driver for {scheme}")
            raise UsageError(f"storage {redact_uri(url)!r} cannot be used: {first[:300]}") from None
    raise AssertionError("unreachable")


def open_study(tc: TuneConfig, scenario_hash: str) -> optuna.Study:
    """Create or resume the study in ``tc.storage`` (raises `UsageError` if the storage cannot be used, or if the
    study belongs to another scenario or was seeded differently: every worker of a study shares its seed)."""
    storage = connect_storage(tc.storage)
    kw: dict[str, Any] = {"storage": storage, "study_name": tc.name_for(scenario_hash), "load_if_exists": True}
    # TPE reads the constraint each trial sets (Trial.set_constraint) and prefers feasible regions.
    sampler = TrialSeededSampler(tc.seed, tc.sampler, n_startup_trials=5)
    if tc.mode == "single":
        study = optuna.create_study(direction="maximize", sampler=sampler,
                                    pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1), **kw)
    else:
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler, **kw)
    known = study.user_attrs.get("scenario_hash")
    if known is not None and known != scenario_hash:
        raise UsageError(f"study {study.study_name!r} belongs to scenario {known}, not {scenario_hash}; "
                         "valid: another --study-name")
    seeded = study.user_attrs.get("sampler_seed")
    if seeded is not None and int(seeded) != tc.seed:
        raise UsageError(f"sampler seed {tc.seed} does not match study {study.study_name!r}, which was seeded with "
                         f"{seeded}; valid: --sampler-seed {seeded} (all workers of a study share its seed) or "
                         "another --study-name")
    for number, worker in fail_dead_trials(study):
        log.warning("study %s: trial %d was left running by worker %s, which is gone: marked failed",
                    study.study_name, number, worker)
    for k, v in {"scenario_hash": scenario_hash, "method": tc.method, "mode": tc.mode, "sampler_seed": tc.seed,
                 "budget_max": tc.budget_max, "utility_tolerance": tc.utility_tolerance,
                 "select_fraction": tc.select_fraction, "equivalence_margin": tc.equivalence_margin}.items():
        study.set_user_attr(k, v)
    return study


def wait_for_trials(tc: TuneConfig, scenario_hash: str, timeout_s: float, poll_s: float = 5.0) -> int:
    """Wait until the study of (``tc``, scenario) has ``tc.n_trials`` finished trials (complete or pruned), made by
    `tune` workers elsewhere on the same storage, or has settled (``stop=settled``, `stopping`), or until
    ``timeout_s`` passed; returns the count reached. A study
    that does not exist yet counts 0 (its first worker creates it)."""
    name, storage = tc.name_for(scenario_hash), connect_storage(tc.storage)
    deadline, count, shown = time.monotonic() + timeout_s, 0, -1
    while True:
        settled = False
        try:
            study = optuna.load_study(study_name=name, storage=storage)
            trials = study.get_trials(deepcopy=False)
            count = len([t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE,
                                                          optuna.trial.TrialState.PRUNED)])
            settled = tc.rule.settled_at(objective_history(trials)) is not None
        except KeyError:  # no worker has created the study yet
            count = 0
        if count >= tc.n_trials or settled or time.monotonic() >= deadline:
            log.info("study %s: %d of %d trials finished by workers%s", name, count, tc.n_trials,
                     " (settled)" if settled else "" if count >= tc.n_trials else "; running the rest here")
            return count
        if count != shown:
            log.info("study %s: waiting for workers, %d of %d trials finished", name, count, tc.n_trials)
            shown = count
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))


def fail_dead_trials(study: optuna.Study) -> list[tuple[int, str]]:
    """Mark failed the RUNNING trials whose worker is known dead; returns (trial number, worker) for each.

    A killed worker (kill -9, a crash, a lost machine) leaves its trial RUNNING for good. Each trial records its
    worker (`workers.worker_id`) first thing; a trial of a dead process of this host is failed here, when the study
    is next opened. Database storages also have Optuna's heartbeat, which fails a trial of any host once its worker
    stopped beating for the grace period, and so does a gRPC proxy (`GrpcProxyWithHeartbeat`); the journal file has
    no heartbeat, so a trial left by a worker of another host stays RUNNING there (a journal file serves one
    machine).
    """
    from .workers import is_dead

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # does nothing without a heartbeat (the journal file)
    failed = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = str(t.user_attrs.get("worker", ""))
        if worker and is_dead(worker):
            study.tell(t.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
            failed.append((t.number, worker))
    return failed


def is_feasible(trial: optuna.trial.FrozenTrial) -> bool:
    """A trial kept utility (a trial that never set its constraint, e.g. pruned, is not feasible)."""
    return float((trial.constraints or {}).get(CONSTRAINT, math.inf)) <= 0


def objective_history(trials: list[optuna.trial.FrozenTrial]) -> list[float]:
    """Each finished trial's objective (closeness to retraining on the selection part) in trial order, NaN where
    the trial is not feasible (pruned, failed, utility lost): the series whose running maximum is the study's best
    case so far."""
    return [t.user_attrs["metrics"].get("objective", float("nan")) if "metrics" in t.user_attrs and is_feasible(t)
            else float("nan") for t in sorted(trials, key=lambda t: t.number) if t.state.is_finished()]


def make_objective(
    tc: TuneConfig,
    method: Method,
    scenario: Scenario,
    poisoned: nn.Module,
    reference_metrics: dict[str, dict[str, float]],
    yard: Yardstick,
    ctx: RunContext,
    reporter: TrialReporter,
    discovery: Discovery | None = None,
) -> Callable[[optuna.Trial], Any]:
    attack = scenario.attack
    acc_floor = reference_metrics["poisoned"]["test_acc"] - tc.utility_tolerance
    largest_k = max_k(poisoned)

    def objective(trial: optuna.Trial) -> Any:
        assert method.search_space is not None
        trial.set_user_attr("worker", worker_id())  # first: a trial left RUNNING by a dead worker can be failed
        trial.set_user_attr("max_k", largest_k)  # for depth-dependent spaces (EU-k, CF-k: k <= max_k)
        params = method.search_space(trial)
        budget = trial.suggest_float("budget", tc.budget_max / 10, tc.budget_max, log=True)
        cfg = method.config(**params)
        reporter.started(trial, {**params, "budget": budget})
        metrics: dict[str, float] = {}
        reached: dict[str, float] = {}  # a pruned trial's last intermediate evaluation (what it had reached)
        callback_time = [0.0]  # intermediate evaluation, timed apart from the method's own compute

        def on_epoch(epoch: int, model: nn.Module, values: dict[str, float]) -> None:
            if not all(math.isfinite(v) for v in values.values()):
                raise optuna.TrialPruned(f"diverged at epoch {epoch + 1} (non-finite loss)")
            if tc.mode != "single":
                return
            t0 = time.perf_counter()
            current = yard.selection(attack, attack.scores(model, scenario.data, scenario.poisoning, ctx))
            reached.update({**current, "epochs_done": float(epoch + 1)})
            trial.report(current["objective"], epoch)
            prune = trial.should_prune()
            callback_time[0] += time.perf_counter() - t0
            if prune:
                raise optuna.TrialPruned(f"pruned at epoch {epoch + 1}: closeness to retraining "
                                         f"{current['objective']:.3f} below the median")

        try:
            out = unlearn(method, cfg, budget, scenario, poisoned, reference_metrics, yard, ctx,
                          on_epoch=on_epoch, utility_tolerance=tc.utility_tolerance, discovery=discovery)
            metrics = out.metrics
            # The method's own compute and all evaluation (final + per-epoch), timed apart (overhead benchmark).
            metrics["method_time_s"] = metrics["wall_time_s"] - callback_time[0]
            metrics["eval_time_s"] += callback_time[0]
            if not math.isfinite(metrics["objective"]):
                raise optuna.TrialPruned("the objective is not finite")
        except Diverged as e:
            trial.set_user_attr("reason", str(e))
            reporter.finished(trial, "pruned", metrics, str(e))
            raise optuna.TrialPruned(str(e)) from None
        except optuna.TrialPruned as e:
            trial.set_user_attr("reason", str(e))
            reporter.finished(trial, "pruned", metrics or reached, str(e))
            raise
        except Exception as e:
            reason = f"{type(e).__name__}: {e}"
            trial.set_user_attr("reason", reason[:500])
            reporter.finished(trial, "failed", metrics, reason)
            raise
        constraint = acc_floor - metrics["test_acc"]
        trial.set_constraint(CONSTRAINT, constraint)
        trial.set_user_attr("metrics", {k: v for k, v in metrics.items() if math.isfinite(v)})
        reporter.finished(trial, "complete" if constraint <= 0 else "infeasible", metrics, "")
        if tc.mode == "single":
            return metrics["objective"]
        return metrics["objective"], metrics["budget_used"]

    return objective


def feasible_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Completed trials that met the utility constraint and have a finite objective."""
    out = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if is_feasible(t) and t.values and math.isfinite(t.values[0]):
            out.append(t)
    return out


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The feasible trial closest to retraining on the selection part (highest ``objective``; ties: smaller budget
    used); None if no trial is feasible."""
    feas = feasible_trials(study)
    if not feas:
        return None
    return max(feas, key=lambda t: (t.values[0], -t.user_attrs["metrics"].get("budget_used", 1.0)))


def pareto_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Feasible trials not dominated in (objective up, budget used down)."""
    feas = feasible_trials(study)
    pts = [(t.user_attrs["metrics"]["objective"], t.user_attrs["metrics"]["budget_used"]) for t in feas]
    front = []
    for i, (r, b) in enumerate(pts):
        if not any((r2 >= r and b2 <= b) and (r2 > r or b2 < b) for j, (r2, b2) in enumerate(pts) if j != i):
            front.append(feas[i])
    return sorted(front, key=lambda t: t.user_attrs["metrics"]["budget_used"])


def split_params(params: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """A trial's params -> (method config kwargs, budget)."""
    p = dict(params)
    budget = float(p.pop("budget"))
    return p, budget
