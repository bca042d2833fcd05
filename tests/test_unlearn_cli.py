"""The `unlearn` entry point end to end on a fresh store, and its bad-input handling."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from unlearn_search import cli, tracking

FAST = ["--train-epochs", "4"]


def test_unlearn_on_a_fresh_store_builds_the_scenario_logs_and_registers(mlflow_store, capsys):
    assert cli.main(["unlearn", "--method", "gd", "--budget", "0.2", "--lr", "0.05", *FAST]) == 0
    out = capsys.readouterr().out
    assert "poison NOT removed" in out or "poison removed" in out
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
    # removal is computed from the logged references, exactly as PAPER.md section 5 defines it
    expected = (m["poisoned.gus_z"] - m["gus_z"]) / (m["poisoned.gus_z"] - m["retrain.gus_z"])
    assert m["removal"] == pytest.approx(expected)
    # the unlearned model is registered with lineage
    (mv,) = MlflowClient().search_model_versions(f"name = '{tracking.registered_name(tracking.unlearned_role('gd'))}'")
    assert mv.tags["method"] == "gd" and mv.tags["source_model"] == f"{tracking.registered_name('poisoned')}/1"
    assert mv.tags["scenario_hash"] == run.data.tags["scenario_hash"]
    assert json.loads(mv.tags["config"])["lr"] == 0.05


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--method", "magic"], "argument --method: invalid choice: 'magic'"),
        (["--method", "gd", "--lr", "-0.1"], "lr=-0.1 is out of range; valid: (0, inf)"),
        (["--method", "gd", "--budget", "0"], "budget=0.0 is out of range; valid: (0, 1]"),
        (["--method", "gd", "--budget", "1.5"], "budget=1.5 is out of range; valid: (0, 1]"),
        (["--method", "gd", "--alpha", "1"], "unrecognized arguments: --alpha"),
        (["--method", "scrub", "--temperature", "0"], "temperature"),
        (["--method", "eu_k", "--k", "4"], "k=4 is out of range for a model with 3 blocks; valid: 1..3"),
        (["--method", "cf_k", "--k", "0"], "k=0 is out of range"),
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
