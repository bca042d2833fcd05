"""The `unlearn` entry point end to end on a fresh store, and its bad-input handling."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from unlearn_search import cli, tracking

FAST = ["--train-epochs", "4"]


def test_unlearn_on_a_fresh_store_builds_the_scenario_logs_and_registers(mlflow_store, capsys):
    assert cli.main(["unlearn", "--method", "gd", "--budget", "0.2", "--lr", "0.05", *FAST]) == 0
    out = capsys.readouterr().out
    assert any(f"poison {answer}:" in out for answer in ("not removed", "removed", "inconclusive"))
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.entry_point = 'unlearn'")
    assert len(runs) == 1
    run = MlflowClient().get_run(runs["run_id"][0])
    m, p = run.data.metrics, run.data.params
    for key in ("test_acc", "retain_acc", "forget_acc", "gus", "gus_z", "gus_pvalue", "gus_tpr_at_1fpr", "gus_auc",
                "mia_auc", "mia_tpr_at_1fpr", "removal", "removal_pvalue", "poison_removed", "compute_used",
                "budget_used", "wall_time_s", "poisoned.gus_z", "retrain.gus_z", "poisoned.test_acc"):
        assert key in m, key
    assert 0 < m["budget_used"] <= 0.2 + 1e-9
    assert p["method"] == "gd" and p["method.lr"] == "0.05" and p["budget"] == "0.2"
    # removal is anchored at GUS's exact null: 1 - r_u / r_p with the logged residues (mean I_z on the verdict part,
    # adjusted by the retrained reference's I_z), and near the plain 1 - z_u / z_p of the logged z-scores
    assert m["removal"] == pytest.approx(1 - m["residue"] / m["poisoned.residue"])
    assert abs(m["removal"] - (1 - m["gus_z"] / m["poisoned.gus_z"])) < 0.5
    # the unlearned model is registered with lineage
    (mv,) = MlflowClient().search_model_versions(f"name = '{tracking.registered_name(tracking.unlearned_role('gd'))}'")
    assert mv.tags["method"] == "gd" and mv.tags["source_model"] == f"{tracking.registered_name('poisoned')}/1"
    assert mv.tags["scenario_hash"] == run.data.tags["scenario_hash"]
    assert mv.tags["param.lr"] == "0.05" and mv.tags["retrain_model"] == f"{tracking.registered_name('retrain')}/1"
    # the version says how good it is: verdict and numbers in its description, its own metrics and params
    first = mv.description.split("\n")[0]  # plain text: the registry's list shows it raw
    assert first.startswith("gd, seed 0, one unlearn run at budget") and "*" not in first and "`" not in first
    assert f": poison {run.data.tags['verdict']}; removal {m['removal']:.4g} " in first
    assert f"| removal (0 = none, 1 = retrain) | {m['removal']:.4g} | 0 | 1 |" in mv.description
    logged = mlflow.get_logged_model(mv.source.removeprefix("models:/"))  # the version's logged model
    assert logged.name == "gd" and logged.params["lr"] == "0.05"
    assert {x.key: x.value for x in logged.metrics}["removal"] == pytest.approx(m["removal"])


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--method", "magic"], "argument --method: unknown method 'magic'; valid: bad_teacher, cf_k"),
        (["--method", "gd", "--lr", "-0.1"], "lr=-0.1 is out of range; valid: (0, inf)"),
        (["--method", "gd", "--budget", "0"], "budget=0.0 is out of range; valid: (0, 1]"),
        (["--method", "gd", "--budget", "1.5"], "budget=1.5 is out of range; valid: (0, 1]"),
        (["--method", "gd", "--alpha", "1"], "unrecognized arguments: --alpha"),
        (["--method", "scrub", "--temperature", "0"], "temperature"),
        (["--method", "eu_k", "--k", "4"], "k=4 is out of range for mlp (2 units); valid: 1..1"),
        (["--method", "eu_k", "--k", "2"], "k=2 re-initialises every unit of mlp, which is retraining from scratch "
                                           "(use method 'retrain'); valid: 1..1"),
        (["--method", "cf_k", "--k", "0"], "k=0 is out of range"),
        (["--method", "gd", "--lr", "inf"], "lr=inf is out of range; valid: a finite number in (0, inf)"),
        (["--method", "gd", "--lr", "nan"], "lr=nan is out of range"),
        (["--method", "gd", "--seed", "100000000000000000000"],
         "seed=100000000000000000000 is out of range; valid: [0, 4294967295]"),
        (["--method", "gd", "--seed", "-1"], "seed=-1 is out of range; valid: [0, 4294967295]"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(mlflow_store, capsys, cli_exit, argv, needle):
    assert cli_exit(["unlearn", *argv]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and needle in err, err
    assert not Path("mlflow.db").exists() and not Path("mlruns").exists()


def test_unlearn_on_the_backdoor_attack_uses_its_own_metric(mlflow_store, capsys):
    assert cli.main(["unlearn", "--method", "gd", "--attack", "backdoor", "--budget", "0.1", "--register", "false",
                     "--train-epochs", "15"]) == 0
    assert "backdoor_asr:" in capsys.readouterr().out
    (run_id,) = mlflow.search_runs(search_all_experiments=True, filter_string="tags.entry_point = 'unlearn'")[
        "run_id"]
    m = MlflowClient().get_run(run_id).data.metrics
    assert "gus_z" not in m and "backdoor_asr" in m and m["poisoned.backdoor_asr"] > m["retrain.backdoor_asr"]
    p, r = m["poisoned.backdoor_asr"], m["retrain.backdoor_asr"]
    expected = (p - m["backdoor_asr"]) / (p - r)
    assert m["removal"] == pytest.approx(expected)
    assert not MlflowClient().search_model_versions("name = 'unlearn_search.unlearned.gd'")  # register=false


def test_the_retrain_method_never_replaces_the_retrained_reference(mlflow_store, capsys):
    """A (partial) retraining registered by the `retrain` method must not be found as the scenario's reference."""
    assert cli.main(["unlearn", "--method", "retrain", "--budget", "0.2", *FAST]) == 0
    assert cli.main(["poison", *FAST]) == 0
    assert "(reused)" in capsys.readouterr().out
    refs = MlflowClient().search_model_versions(f"name = '{tracking.registered_name('retrain')}'")
    assert len(refs) == 1 and refs[0].tags["role"] == "retrain"
    assert MlflowClient().search_model_versions("name = 'unlearn_search.unlearned.retrain'")


def test_mlproject_passes_negative_values_to_the_option_they_belong_to(mlflow_store, capsys, cli_exit):
    """MLflow substitutes -P values into the entry point's command; `--lr {lr}` made -P lr=-inf read as a flag
    ("expected one argument"). With `--lr={lr}` the value reaches lr's own check."""
    import shlex

    import yaml

    command = yaml.safe_load((Path(__file__).parents[1] / "MLproject").read_text())["entry_points"]["gd"]["command"]
    assert "--lr={lr}" in command
    argv = shlex.split(command.replace("{lr}", shlex.quote("-inf")))
    argv = [a if "{" not in a else a.split("=")[0] + "=default" for a in argv]  # other parameters: defaults
    argv = [a for a in argv[3:] if not a.endswith("=default") or a.split("=")[0] in ("--dataset", "--model")]
    assert cli_exit(argv) == 2
    assert "lr=-inf is out of range; valid: a finite number in (0, inf)" in capsys.readouterr().err


def test_a_collapsed_model_says_utility_was_lost(mlflow_store, capsys):
    """gd with lr 50 wrecks the model (test accuracy 0.1); its removal looks large (> 1), but the printed summary says
    that it does not count."""
    assert cli.main(["unlearn", "--method", "gd", "--lr", "50", "--budget", "0.05", "--register", "false", *FAST]) == 0
    out = capsys.readouterr().out
    assert "UTILITY LOST: test accuracy" in out and "so the removal does not count" in out


def test_a_model_whose_outputs_overflow_is_a_divergence_not_a_crash(mlflow_store, capsys):
    """lr 1e6 leaves finite weights whose outputs overflow: the MIA's losses are NaN. It used to crash in scoring;
    now it is the one-line divergence error (exit 1)."""
    # 15% poisons: the scenario where lr 1e6 leaves finite weights (with the default's 30% they become inf)
    code = cli.main(["unlearn", "--method", "gd", "--lr", "1e6", "--budget", "0.05", "--register", "false",
                     "--poison-fraction", "0.15", *FAST])
    last = capsys.readouterr().err.strip().splitlines()[-1]  # before it: MLflow's own registration messages
    assert code == 1 and last.startswith("error: gd diverged (finite weights, but") and "overflow" in last, last
