"""plan: what a compare will run, checked against a real compare's recorded compute, and its arithmetic by hand."""

from __future__ import annotations

import math

import mlflow
import pytest

from unlearn_search import cli
from unlearn_search.compare import parse_methods
from unlearn_search.plan import MEAN_BUDGET_FRACTION, make_plan

#: A small compare (two methods, two trials, one seed, 2 epochs): the plan of the same flags is checked against it.
SMALL = ["--methods", "gd,ga", "--n-trials", "2", "--train-epochs", "2", "--seeds", "1"]


def _plan(*argv: str):
    a = cli.build_parser(["plan"]).parse_args(["plan", *argv])
    cfg = cli.scenario_from_args(a)
    return make_plan([cfg], a.seeds or 1, parse_methods(a.methods), a.n_trials, a.budget_max)


def test_plan_matches_what_a_real_compare_recorded(mlflow_store, capsys):
    """The trainings' example-passes are exactly what the references logged (train_compute), the poisons as many
    as the scenario has, and every trial's metered compute (compute_used) is within the plan's per-trial bound, so
    the methods' rows bound their studies."""
    assert cli.main(["compare", *SMALL, "--stop", "fixed", "--storage", "j.log"]) == 0
    plan = _plan(*SMALL)
    (s,) = plan.scenarios
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    refs = {r.data.tags["role"]: r.data.metrics for r in runs if r.data.tags.get("role") in ("poisoned", "retrain")}
    poisoned, retrain = s.rows[0], s.rows[1]
    assert poisoned.total == refs["poisoned"]["train_compute"] == 2 * 1437
    assert retrain.total == refs["retrain"]["train_compute"] == s.retrain_cost
    (scenario,) = [r for r in runs if r.data.tags.get("entry_point") == "scenario"]
    assert s.n_poison == scenario.data.metrics["n_poison"] == 431  # 0.3 of digits' 1,437
    trials = [r for r in runs if r.data.tags.get("kind") == "trial"]
    assert len(trials) == 4
    for method in ("gd", "ga"):
        (row,) = [r for r in s.rows if r.what.startswith(f"{method}: trials")]
        used = [t.data.metrics["compute_used"] for t in trials if t.data.tags["method"] == method]
        assert len(used) == row.runs == 2
        assert all(0 <= u <= row.each for u in used), (method, used, row.each)  # 0: a budget below one batch
        assert sum(used) <= row.total
        assert row.each == pytest.approx(0.1 * retrain.total)
    capsys.readouterr()
    assert cli.main(["plan", *SMALL, "--examples-per-second", "1000"]) == 0
    out = capsys.readouterr().out
    assert "poisoned model (2 epochs x 1,437)" in out and "retrained reference (2 x 1,006 = R)" in out
    assert f"{plan.total:,.0f}" in out and out.strip().splitlines()[-1].endswith("at 1,000 examples/s (given)")


def test_paper_plan_arithmetic_by_hand():
    from unlearn_search.cli import N_TRIALS_CAP

    assert _plan("--preset", "paper", "--seeds", "8").scenarios[0].rows[2].runs == N_TRIALS_CAP  # "at most": the cap
    plan = _plan("--preset", "paper", "--seeds", "8", "--n-trials", "20")
    (s,) = plan.scenarios
    r = 100 * 49_250  # retraining: 100 epochs on the 50,000 - 750 retain points
    assert (s.n_poison, s.n_retain, s.retrain_cost) == (750, 49_250, r)
    rows = {row.what.split(":")[0].split(" (")[0]: row for row in s.rows}
    assert rows["poisoned model"].total == 100 * 50_000
    assert rows["gd"].runs == 20 and rows["gd"].each == pytest.approx(0.1 * r) and rows["gd"].bound
    assert rows["gd"].about == pytest.approx(0.1 * r * 0.9 / math.log(10))
    assert len([row for row in s.rows if row.what.endswith("trials (each <= 0.1 R)")]) == 8  # the paper's eight
    assert rows["best trial re-run, one per method"].runs == 8
    judged = rows["evaluation of each judged model"]
    assert judged.runs == 2 + 8 * 21 and judged.each == pytest.approx((10_000 + 49_250 + 750) / 3 + 750)
    pruning = rows["per-epoch pruning scores, per trial"]
    assert pruning.total == pytest.approx(8 * 20 * 0.1 * r)  # GUS: <= one gradient per poison per epoch of >= 750
    # about: GA's epochs are the forget set (as many checks as its compute), the others' the retain set
    a = 0.1 * r * MEAN_BUDGET_FRACTION
    assert pruning.about_total == pytest.approx(20 * (a + 7 * a / 49_250 * 750))
    assert plan.total == pytest.approx(8 * sum(row.total for row in s.rows))
    assert plan.total == pytest.approx(8 * (100 * 50_000 + r + 8 * 21 * 0.1 * r + 170 * judged.each + 24 * 750
                                            + 160 * 0.1 * r))


def test_plan_counts_the_extras_and_added_poisons():
    a = cli.build_parser(["plan"]).parse_args(["plan", "--attack", "gradient_canceling", "--model", "linear",
                                               "--train-weight-decay", "0.01"])
    (s,) = make_plan([cli.scenario_from_args(a)], 1, ["gd"], 2, 0.1, lira_shadows=4, hypotheses=True).scenarios
    k = round(0.03 * 1437)
    assert (s.n_poison, s.n_corrupted, s.n_retain) == (k, 1437 + k, 1437)  # added, nothing replaced
    rows = {row.what.split(" (")[0]: row for row in s.rows}
    assert rows["clean control, hypotheses"].total == 60 * 1437
    assert rows["LiRA shadow models, poisoned replicates"].total == 2 * 60 * (1437 + k)  # as the poisoned model
    assert rows["LiRA shadow models, retrained replicates"].total == 2 * 60 * 1437  # as the retrained one
    assert s.notes == ["gradient_canceling crafts its poisons against models of its own (not counted)"]


def test_plan_measures_throughput_here_when_not_given(mlflow_store, capsys):
    assert cli.main(["plan", "--methods", "gd", "--n-trials", "3", "--seeds", "1", "--device", "cpu"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "examples/s (measured here: mlp training, batch 64, fp32, on cpu (" in last
    assert last.startswith("about ") and "CPU-" in last  # measured on a CPU: CPU time, not GPU time


@pytest.mark.parametrize("argv, needle", [
    (["--poison-fraction", "60000", "--preset", "paper"], "poison_fraction=60000 asks for 60000 poisons of 50000"),
    (["--examples-per-second", "-5"], "examples_per_second=-5.0 is out of range"),
    (["--methods", "nope"], "unknown method 'nope'"),
    (["--preset", "paper", "--dataset", "cifar10@60000,10"], "a subset larger than cifar10"),
])
def test_bad_plan_input_is_one_line(argv, needle, capsys, cli_exit, mlflow_store):
    assert cli_exit(["plan", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


def test_a_discovery_sweep_runs_each_method_study_once_per_fraction():
    """compare --discovered-fraction 0.1,0.5,1 runs a study per method and fraction: three times the trials, the
    re-runs, the judged models and the attack scores; the trainings are shared."""
    one = _plan("--methods", "gd,ga", "--n-trials", "4").scenarios[0]
    cfg = cli.scenario_from_args(cli.build_parser(["plan"]).parse_args(["plan"]))
    three = make_plan([cfg], 1, ["gd", "ga"], 4, 0.1, studies_per_method=3).scenarios[0]

    def runs(plan, start: str) -> int:  # type: ignore[no-untyped-def]
        return next(r.runs for r in plan.rows if r.what.startswith(start))

    assert runs(three, "poisoned model") == runs(one, "poisoned model") == 1  # the references: once
    assert runs(three, "gd: trials") == 3 * runs(one, "gd: trials") == 12
    assert runs(three, "best trial re-run") == 3 * runs(one, "best trial re-run") == 6
    assert runs(three, "evaluation of each judged model") == 2 + 2 * 3 * (4 + 1)
    assert runs(three, "attack scores") == 3 * runs(one, "attack scores")
    assert runs(three, "per-epoch pruning") == 3 * runs(one, "per-epoch pruning")
    assert cli.main(["plan", "--discovered-fraction", "0", "--examples-per-second", "1"]) == 2
