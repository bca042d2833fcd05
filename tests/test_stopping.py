"""The converged search (issue 26): the stopping rule, its wiring into tune and compare, the warm start across seeds
and the sampler choice."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import optuna
import pytest

from unlearn_search import report, search
from unlearn_search.stopping import StopRule

NAN = math.nan


def test_settled_after_patience_trials_without_a_gain_above_the_tolerance() -> None:
    rule = StopRule("settled", min_trials=5, patience=3, tolerance=0.01)
    # best case: -0.9, -0.5, -0.5, -0.495 (a gain of 0.005: below the tolerance), ...
    h = [-0.9, -0.5, NAN, -0.6, -0.495, -0.7, -0.8, -0.9]
    assert rule.settled_at(h) == 5  # at 5: best -0.495 against best -0.5 three trials before: moved 0.005
    assert rule.settled_at(h[:4]) is None  # fewer than the minimum
    rising = [-1.0 + 0.05 * i for i in range(30)]  # every trial a real gain: never settles
    assert rule.settled_at(rising) is None
    assert rule.settled_at([NAN] * 20) is None  # no feasible trial: nothing settled, run to the cap
    late = [NAN] * 6 + [-0.5] * 6  # the first feasible trial at 7: not settled until 3 trials after it
    assert rule.settled_at(late) == 10
    assert StopRule("fixed").settled_at(h) is None
    # the earliest stop is after patience + 1 trials even below the minimum's reach
    assert StopRule("settled", min_trials=1, patience=3).settled_at([-0.5] * 10) == 4


def test_describe_says_settled_capped_or_fixed_with_a_reason() -> None:
    rule = StopRule("settled", min_trials=5, patience=3, tolerance=0.01)
    state, reason = rule.describe([-0.5] * 5, cap=50)
    assert state == "settled" and reason.startswith("settled after 5 trials: the best case moved by 0")
    state, reason = rule.describe([-1.0 + 0.05 * i for i in range(20)], cap=20)
    assert state == "capped" and reason.startswith("capped at 20 trials, still improving")
    assert rule.describe([-0.9, -0.8], cap=20)[0] == "running"
    assert rule.describe([NAN] * 20, cap=20) == ("capped", "capped at 20 trials without a feasible trial: no best "
                                                            "case to settle")
    assert StopRule("fixed").describe([-0.5] * 7, cap=7) == ("fixed", "stop=fixed: 7 trials, as asked")


def test_the_rule_stops_a_flat_search_early_and_never_stops_one_that_keeps_finding() -> None:
    """A simulation of what the rule is for. Searches whose best case is reached early (values drawn from a fixed
    distribution: the running maximum's gains shrink) settle well before a cap of 200 and lose little; a search that
    keeps finding better settings (a drift upwards) is never called settled."""
    rng = np.random.default_rng(0)
    rule = StopRule("settled")  # the defaults
    stops, lost = [], []
    for _ in range(200):
        h = np.minimum(rng.normal(-0.6, 0.1, 200), 0.0)
        at = rule.settled_at(list(h))
        assert at is not None
        stops.append(at)
        lost.append(h.max() - h[:at].max())
    assert np.median(stops) < 80 and np.mean(lost) < 0.05
    for _ in range(20):  # a gain of 0.02 every 10 trials on top of the noise: above the tolerance every 30
        h = rng.normal(-2.0, 0.001, 200) + 0.002 * np.arange(200)
        assert rule.settled_at(list(h)) is None


def test_search_column_says_how_each_search_ended() -> None:
    def row(**values: list[float]) -> report.Row:
        r = report.Row(name="gd", n=len(values["search_trials"]))
        r.values.update(values)
        return r

    assert report.search_cell(row(search_trials=[57.0, 41.0, 66.0], search_settled=[1.0] * 3,
                                  search_capped=[0.0] * 3)) == "settled after 41-66 trials"
    assert report.search_cell(row(search_trials=[57.0], search_settled=[1.0], search_capped=[0.0])) == \
        "settled after 57 trials"
    partly = row(search_trials=[52.0], search_settled=[1.0], search_capped=[0.0])
    partly.missing = 2  # two seeds without a feasible trial: no row values, nothing to settle
    assert report.search_cell(partly) == "settled after 52 trials; no feasible trial in 2 (no best case to settle)"
    assert report.search_cell(row(search_trials=[57.0, 100.0, 100.0], search_settled=[1.0, 0.0, 0.0],
                                  search_capped=[0.0, 1.0, 1.0])) == "capped at 100, still improving in 2 of 3 seeds"
    fixed = row(search_trials=[20.0, 20.0])
    assert report.search_cell(fixed) == "20 trials (fixed), best not in the last 20%"
    fixed.improving = 1
    assert report.search_cell(fixed) == "still improving in 1 of 2 seeds: run more trials"


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--stop", "never"], "unknown stop 'never'; valid: fixed, settled"),
        (["--sampler", "cmaes"], "unknown sampler 'cmaes'; valid: gp, random, tpe"),
        (["--min-trials", "50", "--n-trials", "40"], "min_trials=50 is above the cap n_trials=40; valid: min_trials"),
        (["--n-trials", "0"], "n_trials=0 is out of range; valid: [1, inf)"),
        (["--min-trials", "0"], "min_trials=0 is out of range; valid: [1, inf)"),
    ],
)
def test_compare_bad_stop_input_is_one_line_and_creates_nothing(mlflow_store, capsys, cli_exit, argv, needle):  # type: ignore[no-untyped-def]
    assert cli_exit(["compare", "--methods", "gd", *argv]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and needle in err, err
    assert not Path("mlflow.db").exists() and not Path("optuna_journal.log").exists()


def test_a_sampler_other_than_tpe_is_its_own_study_seeded_per_trial() -> None:
    tc = search.TuneConfig(method="gd", sampler="random")
    assert tc.name_for("a" * 16).endswith("-random-aaaaaaaaaaaa-c")
    assert search.TuneConfig(method="gd").name_for("a" * 16) == "gd-aaaaaaaaaaaa-c"  # TPE: the name it had
    sampler = search.TrialSeededSampler(3, "random")
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=4)
    again = optuna.create_study(sampler=search.TrialSeededSampler(3, "random"))
    again.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=4)
    xs = [t.params["x"] for t in study.trials]
    assert xs == [t.params["x"] for t in again.trials] and len(set(xs)) == 4  # per-trial seeds: no repeats


@pytest.mark.slow
def test_tune_settled_stops_before_the_cap_tags_why_and_a_settled_study_runs_no_more(mlflow_store, caplog) -> None:  # type: ignore[no-untyped-def]
    import logging

    from mlflow.tracking import MlflowClient

    from unlearn_search import cli

    args = ["tune", "--method", "ga", "--train-epochs", "20", "--stop", "settled", "--min-trials", "4",
            "--patience", "3", "--n-trials", "40"]
    assert cli.main(["-q", *args]) == 0
    study = optuna.load_study(study_name=search.TuneConfig(method="ga").name_for(_hash()),
                              storage=search.connect_storage("optuna_journal.log"))
    n = len(study.trials)
    assert 4 <= n < 40  # settled before the cap
    history = search.objective_history(study.get_trials())
    assert StopRule("settled", 4, 3).settled_at(history) == n  # stopped at the first trial the rule held
    (run,) = [r for r in MlflowClient().search_runs(["1"]) if r.data.tags.get("kind") == "tune"]
    assert run.data.tags["search_stop"] == "settled"
    assert run.data.tags["search_stop_reason"].startswith(f"settled after {n} trials")
    assert run.data.params["stop"] == "settled"
    caplog.set_level(logging.INFO)
    assert cli.main(["-q", *args]) == 0  # resumed: already settled, so no trial is added
    assert len(study.trials) == n
    assert "running 0 more" in caplog.text


def _hash() -> str:
    from unlearn_search.scenario import ScenarioConfig
    from unlearn_search.training import TrainConfig

    return ScenarioConfig(train=TrainConfig(epochs=20)).hash


@pytest.mark.slow
def test_compare_warm_starts_each_seed_from_the_best_settings_of_the_earlier_seeds(mlflow_store) -> None:  # type: ignore[no-untyped-def]
    """With --warm-start true, seed 1's study of a method first runs seed 0's best setting (settings only; seed 1
    keeps its own poisons and references); by default (false) it does not."""
    import dataclasses

    from unlearn_search import cli
    from unlearn_search.scenario import ScenarioConfig
    from unlearn_search.training import TrainConfig

    storage = search.connect_storage("optuna_journal.log")
    base = ScenarioConfig(train=TrainConfig(epochs=20))

    def study(seed: int, name: str = "") -> optuna.Study:
        h = dataclasses.replace(base, seed=seed).hash
        return optuna.load_study(study_name=name or search.TuneConfig(method="ga").name_for(h), storage=storage)

    args = ["compare", "--methods", "ga", "--seeds", "2", "--stop", "fixed", "--n-trials", "6", "--train-epochs", "20"]
    assert cli.main(["-q", *args, "--warm-start", "true"]) == 0
    s0, s1 = study(0), study(1)
    best0 = search.best_trial(s0)
    assert best0 is not None
    first = min(s1.trials, key=lambda t: t.number)
    assert first.params == best0.params  # enqueued: seed 0's best setting, tried first
    assert first.system_attrs.get("fixed_params") == best0.params
    assert not any(t.system_attrs.get("fixed_params") for t in s0.trials)  # seed 0 had no earlier seed
    # by default (no warm start), another store: seed 1's first trial is TPE's own draw
    Path("optuna_journal.log").unlink()
    assert cli.main(["-q", *args]) == 0
    storage = search.connect_storage("optuna_journal.log")
    assert not any(t.system_attrs.get("fixed_params") for t in study(1).trials)
