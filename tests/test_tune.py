"""The tune job: resumable, seeded, shareable by workers, robust to divergence, never picks an infeasible best."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import optuna
import pytest
import torch
from mlflow.tracking import MlflowClient

from unlearn_search import cli, search, tracking, tune
from unlearn_search.context import RunContext
from unlearn_search.methods import Method, UnlearnResult
from unlearn_search.methods.gd import GDConfig
from unlearn_search.methods.gd import search_space as gd_space
from unlearn_search.scenario import ScenarioConfig, build_scenario, evaluate, train_references
from unlearn_search.training import TrainConfig
from unlearn_search.unlearning import Yardstick

FAST = ["--train-epochs", "3"]


def _study(name: str, storage: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=search.connect_storage(storage))


def test_tune_logs_parent_and_children_and_resumes(mlflow_store, capsys):
    storage = "optuna_journal.log"  # the default kind: a journal file in the working directory
    # tolerance 1: every completed trial is feasible, so a best trial must exist and be registered
    args = ["tune", "--method", "gd", "--n-trials", "3", "--storage", storage, "--study-name", "s1",
            "--utility-tolerance", "1", *FAST]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "Best case: trial" in out or "no trial kept utility" in out
    assert len(_study("s1", storage).trials) == 3
    parent = mlflow.search_runs(search_all_experiments=True, filter_string="tags.entry_point = 'tune'")
    assert len(parent) == 1
    pid = parent["run_id"][0]
    # trials: in the experiment beside the tune run's, linked by tag, named method first, with method and study
    trials_exp = MlflowClient().get_experiment_by_name(f"{tracking.EXPERIMENT} trials")
    children = mlflow.search_runs([trials_exp.experiment_id], filter_string=f"tags.tune_run = '{pid}'")
    assert len(children) == 3 and set(children["tags.state"]) <= {"complete", "infeasible", "pruned", "failed"}
    assert set(children["tags.study"]) == {"s1"} and set(children["tags.method"]) == {"gd"}
    assert set(children["tags.mlflow.runName"]) == {f"gd / seed 0 / trial {n}{tune.STATE_SUFFIX[state]}"
                                                    for n, state in zip(children["tags.trial"], children["tags.state"],
                                                                        strict=True)}
    assert "metrics.removal" in children.columns
    assert list(children["metrics.feasible"]) == [float(s == "complete") for s in children["tags.state"]]
    arts = {a.path for a in MlflowClient().list_artifacts(pid, "plots")}
    assert {"plots/removal_vs_compute.png", "plots/dashboard.html", "plots/iz_distributions.png",
            "plots/optimization_history.png"} <= arts
    verdict_txt = mlflow.artifacts.load_text(f"runs:/{pid}/verdict.txt")
    assert max(len(line) for line in verdict_txt.splitlines()) <= 100  # wrapped
    # at spaces only: the printed verdict, word for word ("one-sided" is not broken after its hyphen)
    assert " ".join(verdict_txt.split()) in " ".join(out.split())
    assert "trials.csv" in {a.path for a in MlflowClient().list_artifacts(pid)}
    run = MlflowClient().get_run(pid)
    assert "best_trial" in run.data.tags and "Best case: trial" in out
    assert len(run.data.tags["verdict"]) <= 120  # short enough to read whole in MLflow's tag chips
    mv = MlflowClient().get_model_version_by_alias(tracking.registered_name(tracking.unlearned_role("gd")),
                                                   tracking.scenario_alias(run.data.tags["scenario_hash"]))
    assert mv.tags["study"] == "s1" and mv.tags["trial"] == run.data.tags["best_trial"]
    # resume: the same study name continues the study with n_trials more; references are not retrained
    assert cli.main([*args[:4], "2", *args[5:]]) == 0
    assert len(_study("s1", storage).trials) == 5
    versions = MlflowClient().search_model_versions(f"name = '{tracking.registered_name('poisoned')}'")
    assert len(versions) == 1


def test_seeded_study_is_reproducible(tmp_path):
    trials = []
    for i in range(2):
        tc = search.TuneConfig(method="gd", seed=7, storage=f"sqlite:///{tmp_path}/o{i}.db")
        study = search.open_study(tc, "abc")
        for _ in range(6):
            t = study.ask()
            gd_space(t)
            t.suggest_float("budget", 0.01, 0.1, log=True)
            study.tell(t, 0.5)
        trials.append([t.params for t in study.trials])
    assert trials[0] == trials[1]


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_two_workers_share_one_study_without_losing_or_duplicating_trials(tmp_path, kind):
    storage = f"sqlite:///{tmp_path}/optuna.db" if kind == "sqlite" else str(tmp_path / "optuna_journal.log")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "OMP_NUM_THREADS": "1"}
    # build the scenario once, so the two workers only share the study
    base = [sys.executable, "-m", "unlearn_search", "-q"]
    subprocess.run([*base, "poison", *FAST], cwd=tmp_path, env=env, check=True, capture_output=True, timeout=300)
    cmd = [*base, "tune", "--method", "gd", "--n-trials", "3", "--storage", storage, "--study-name", "shared", *FAST]
    # the same command, the same seed, on two workers: each trial's draws are seeded by its unique number
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()[-2000:]
    trials = _study("shared", storage).trials
    assert sorted(t.number for t in trials) == list(range(6))
    drawn = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(drawn)) == 6, "two trials of the shared study drew the same parameters"
    # both workers registered their best case, but never the same trial twice
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    try:
        versions = MlflowClient().search_model_versions("name = 'unlearn_search.unlearned.gd'")
    finally:
        mlflow.set_tracking_uri(None)
    per_trial = [v.tags["trial"] for v in versions if v.tags.get("study") == "shared"]
    assert per_trial and len(per_trial) == len(set(per_trial)), per_trial


def _synthetic_value(params):
    """A deterministic objective of the drawn parameters, so that TPE's later draws depend on the history."""
    return -abs(math.log10(params["lr"]) + 2) - params["budget"]


def _run_pieces(storage: str, pieces: list[int]) -> list[dict]:
    """ask/tell ``sum(pieces)`` trials, re-opening the study (a fresh sampler, as a new process) before each piece."""
    for n in pieces:
        study = search.open_study(search.TuneConfig(method="gd", seed=3, storage=storage), "abc")
        for _ in range(n):
            t = study.ask()
            gd_space(t)
            t.suggest_float("budget", 0.01, 0.1, log=True)
            study.tell(t, _synthetic_value(t.params))
    return [t.params for t in study.trials]


def test_a_resumed_study_repeats_nothing_and_draws_what_the_uninterrupted_one_draws(tmp_path):
    """Resuming used to re-create the sampler with the same seed, so the first trials after a resume re-drew the
    first trials of the study. Now trial n's draws are seeded from (study seed, n)."""
    whole = _run_pieces(str(tmp_path / "a.log"), [12])
    pieces = _run_pieces(str(tmp_path / "b.log"), [4, 4, 4])
    assert pieces == whole
    assert len({tuple(sorted(p.items())) for p in pieces}) == 12


def test_a_study_seeded_otherwise_is_refused_before_anything_is_written(mlflow_store, capsys, cli_exit):
    from unlearn_search.scenario import ScenarioConfig

    scenario_hash = ScenarioConfig(train=TrainConfig(epochs=3)).hash  # the scenario the command below names
    study = search.open_study(search.TuneConfig(method="gd", seed=0, storage="j.log"), scenario_hash)
    code = cli_exit(["tune", "--method", "gd", "--storage", "j.log", "--sampler-seed", "1", *FAST])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert (f"sampler seed 1 does not match study '{study.study_name}', which was seeded with 0; valid: "
            "--sampler-seed 0") in err
    assert not Path("mlflow.db").exists()
    again = _study(study.study_name, "j.log")
    assert again.trials == [] and again.user_attrs["sampler_seed"] == 0


@pytest.fixture(scope="module")
def tiny_refs():
    cfg = ScenarioConfig(train=TrainConfig(epochs=3))
    ctx = RunContext(0)
    sc = build_scenario(cfg, ctx)
    models = train_references(sc, ctx)
    metrics = {r: evaluate(m, sc, ctx) for r, m in models.items()}
    scores = {r: sc.attack.scores(m, sc.data, sc.poisoning, ctx) for r, m in models.items()}
    return sc, models, metrics, Yardstick.of(sc.attack, scores["poisoned"], scores["retrain"], ctx), ctx


class _Reporter:
    def __init__(self):
        self.states: list[str] = []

    def started(self, trial, params):
        pass

    def finished(self, trial, state, metrics, reason):
        self.states.append(state)


def test_diverging_trial_is_pruned_with_its_reason_and_the_study_completes(tiny_refs):
    sc, models, metrics, yard, ctx = tiny_refs

    def explode(model, splits, cfg, budget, ctx, on_epoch=None):
        bad = UnlearnResult(model=__import__("copy").deepcopy(model), compute_used=1.0, info={"diverged": 1.0})
        with torch.no_grad():
            for p in bad.model.parameters():
                p.fill_(float("nan"))
        return bad

    method = Method("explode", GDConfig, explode, gd_space, "always diverges")
    tc = search.TuneConfig(method="gd", storage="sqlite:///:memory:")
    study = optuna.create_study(direction="maximize")
    reporter = _Reporter()
    objective = search.make_objective(tc, method, sc, models["poisoned"], metrics, yard, ctx, reporter)
    study.optimize(objective, n_trials=3, catch=(Exception,))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED] * 3
    assert all("diverged" in t.user_attrs["reason"] for t in study.trials)
    assert reporter.states == ["pruned"] * 3
    assert search.best_trial(study) is None


def test_infeasible_trial_is_never_best():
    study = optuna.create_study(direction="maximize")
    dist = {"budget": optuna.distributions.FloatDistribution(0.01, 0.1)}
    for value, constraint in [(0.9, 0.05), (0.4, -0.01), (0.95, 0.001), (0.3, 0.0)]:
        study.add_trial(optuna.trial.create_trial(
            params={"budget": 0.05}, distributions=dist, value=value,
            constraints={search.CONSTRAINT: constraint},
            user_attrs={"metrics": {"removal": value, "budget_used": 0.05}}))
    best = search.best_trial(study)
    assert best is not None and best.value == 0.4
    assert best.state == optuna.trial.TrialState.COMPLETE and math.isclose(best.constraints[search.CONSTRAINT], -0.01)


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--method", "nope"], "argument --method: unknown method 'nope'; valid: bad_teacher, cf_k"),
        (["--method", "gd", "--n-trials", "0"], "n_trials=0 is out of range; valid: [1, inf)"),
        (["--method", "gd", "--budget-max", "0"], "budget_max=0.0 is out of range; valid: (0, 1]"),
        (["--method", "gd", "--budget-max", "1.5"], "budget_max=1.5 is out of range; valid: (0, 1]"),
        (["--method", "gd", "--mode", "grid"], "unknown mode 'grid'; valid: pareto, single"),
        (["--method", "gd", "--stop", "soon"], "unknown stop 'soon'; valid: fixed, settled"),
        (["--method", "gd", "--sampler", "cma"], "unknown sampler 'cma'; valid: gp, random, tpe"),
        (["--method", "gd", "--stop", "settled", "--min-trials", "30", "--n-trials", "20"],
         "min_trials=30 is above the cap n_trials=20; valid: min_trials <= n_trials (or stop=fixed)"),
        (["--method", "gd", "--stop", "settled", "--patience", "0"], "patience=0 is out of range; valid: [1, inf)"),
        (["--method", "gd", "--storage", "sqlite:////no/such/dir/o.db"], "storage 'sqlite:////no/such/dir/o.db'"),
        (["--method", "gd", "--storage", "/no/such/dir/j.log"], "storage '/no/such/dir/j.log' cannot be used; valid"),
        (["--method", "gd", "--storage", "redis://localhost/0"], "storage 'redis://localhost/0' cannot be used"),
        (["--method", "gd", "--storage", "postgresql://bob:hunter2@127.0.0.1:9/db"],
         "storage 'postgresql://bob:***@127.0.0.1:9/db' cannot be used"),
    ],
)
def test_bad_input_is_one_line_and_creates_nothing(mlflow_store, capsys, cli_exit, argv, needle):
    assert cli_exit(["tune", *argv]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and needle in err, err
    assert "hunter2" not in err
    assert not Path("mlflow.db").exists() and not Path("optuna.db").exists()
    assert not Path("optuna_journal.log").exists()


def test_storage_passwords_are_redacted_and_env_vars_expanded(monkeypatch):
    assert tracking.redact_uri("postgresql://bob:hunter2@db:5432/optuna") == "postgresql://bob:***@db:5432/optuna"
    assert tracking.redact_uri("sqlite:///optuna.db") == "sqlite:///optuna.db"
    monkeypatch.setenv("PGPASSWORD", "hunter2")
    assert search.expand_storage("postgresql://bob:${PGPASSWORD}@db/o") == "postgresql://bob:hunter2@db/o"


def test_attack_without_effect_runs_no_trials_and_says_so(mlflow_store, monkeypatch, caplog):
    """Removal is a ratio to the poisoned model's residue: when the poisoned model is not detected on the verdict
    part (here it *is* the retrained model), no trial is run and the run says "attack too weak to judge"."""
    from unlearn_search import tune

    real = tune.ensure_references

    def no_effect(cfg, ctx):
        refs = real(cfg, ctx)
        refs.models["poisoned"] = refs.models["retrain"]
        return refs

    monkeypatch.setattr(tune, "ensure_references", no_effect)
    args = ["tune", "--method", "gd", "--n-trials", "3", "--storage", "optuna_journal.log", "--study-name", "noeff",
            *FAST]
    assert cli.main(args) == 0
    assert len(_study("noeff", "optuna_journal.log").trials) == 0
    assert "attack too weak to judge" in caplog.text
    parent = mlflow.search_runs(search_all_experiments=True, filter_string="tags.entry_point = 'tune'")
    assert list(parent["tags.attack_effect"]) == ["too weak to judge"]


def test_trials_carry_the_models_depth_for_depth_dependent_spaces(mlflow_store):
    args = ["tune", "--method", "eu_k", "--n-trials", "1", "--storage", "optuna_journal.log", "--study-name", "depth",
            *FAST]
    assert cli.main(args) == 0
    (trial,) = _study("depth", "optuna_journal.log").trials
    assert trial.user_attrs["max_k"] == 1  # the MLP: two units, so k = 1 only (k = 2 would be retraining)
    assert trial.distributions["k"].high == 1


def test_the_search_picks_retraining_over_an_overshoot(tiny_refs):
    """A synthetic method that moves the poisoned weights along the line to the retrained ones by a factor t in
    [0, 2]: t = 1 is the retrained model, t = 2 overshoots it (the poison's evidence mirrored, removal near 2). Run
    through the real objective (`search.make_objective`: the selection part, pruning, the utility constraint) and
    Optuna, the best trial is the one nearest retraining, not the largest removal: the old objective (maximise
    removal) would have picked t near 2."""
    import dataclasses

    sc, models, metrics, yard, ctx = tiny_refs
    poisoned, retrain = models["poisoned"], models["retrain"]

    @dataclasses.dataclass(frozen=True)
    class Cfg:
        t: float = 1.0

    def interpolate(model, splits, cfg, budget, c, on_epoch=None):  # type: ignore[no-untyped-def]
        out = __import__("copy").deepcopy(model)
        with torch.no_grad():
            for p, q0, q1 in zip(out.parameters(), poisoned.parameters(), retrain.parameters(), strict=True):
                p.copy_(q0 + cfg.t * (q1 - q0))
        return UnlearnResult(model=out.eval(), compute_used=1.0)

    def space(trial):  # type: ignore[no-untyped-def]
        return {"t": trial.suggest_float("t", 0.0, 2.0)}

    method = Method("line", Cfg, interpolate, space, "poisoned -> retrained -> beyond")
    tc = search.TuneConfig(method="gd", utility_tolerance=1.0)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for t in (0.0, 0.5, 1.0, 1.5, 2.0):
        study.enqueue_trial({"t": t, "budget": 0.05})
    study.optimize(search.make_objective(tc, method, sc, models["poisoned"], metrics, yard, ctx, _Reporter()),
                   n_trials=5)
    removal = {t.params["t"]: t.user_attrs["metrics"]["removal_select"] for t in study.trials}
    assert removal[2.0] > 1.3 and removal[0.0] < 0.2  # the line does overshoot: removal grows past 1
    best = search.best_trial(study)
    assert best is not None and best.params["t"] == 1.0, removal
    assert max(removal, key=lambda t: removal[t]) != 1.0  # what maximising removal would have picked instead
