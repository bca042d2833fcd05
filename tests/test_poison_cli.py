"""The `poison` entry point end to end: registry, reuse, reload, and bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from unlearn_search import cli, store, tracking

FAST = ["--train-epochs", "3"]


def _versions(role: str) -> list:
    try:
        return MlflowClient().search_model_versions(f"name = '{tracking.registered_name(role)}'")
    except mlflow.exceptions.MlflowException:
        return []


def test_poison_registers_both_references_then_reuses_them(mlflow_store, monkeypatch, capsys):
    assert cli.main(["poison", *FAST]) == 0
    assert "(trained)" in capsys.readouterr().out
    poisoned, retrain = _versions("poisoned"), _versions("retrain")
    assert len(poisoned) == 1 and len(retrain) == 1
    mv = poisoned[0]
    assert mv.tags["role"] == "poisoned" and mv.tags["scenario.train.epochs"] == "3"
    scenario_hash = mv.tags["scenario_hash"]
    run = MlflowClient().get_run(mv.run_id)
    for key in ("test_acc", "retain_acc", "forget_acc", "gus", "gus_z", "gus_pvalue", "gus_tpr_at_1fpr", "gus_auc"):
        assert key in run.data.metrics

    # Loads with MLflow's own loader, and as a trainable module from weights only; both agree.
    x = torch.rand(5, 1, 8, 8)
    pyfunc_model = mlflow.pytorch.load_model(f"models:/{mv.name}/{mv.version}")
    spec, state = tracking.load_weights(mv.run_id)
    from unlearn_search.models import load_model

    module = load_model(spec, state)
    assert torch.allclose(pyfunc_model(x), module(x), atol=1e-6)
    assert all(p.requires_grad for p in module.parameters())

    # Same parameters: nothing is trained (training would raise), nothing new is registered.
    def boom(*a, **k):  # pragma: no cover - must not run
        raise AssertionError("a cache hit must not train")

    monkeypatch.setattr(store, "train_references", boom)
    assert cli.main(["poison", *FAST]) == 0
    assert "(reused)" in capsys.readouterr().out
    assert len(_versions("poisoned")) == 1 and len(_versions("retrain")) == 1
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.entry_point = 'poison'")
    assert sorted(runs["tags.reused"]) == ["false", "true"]
    assert set(runs["tags.scenario_hash"]) == {scenario_hash}

    # A changed parameter is a new scenario (it would have to train, which is patched to fail).
    with pytest.raises(AssertionError, match="cache hit"):
        cli.main(["poison", *FAST, "--seed", "1"])


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--dataset", "mnist"], "unknown dataset 'mnist'; valid: cifar10, digits, imdb, sentiment, folder:<path>, "
                                 "npz:<path>, text:<file>"),
        (["--model", "resnet"], "unknown model 'resnet'; valid: cnn, linear, mlp"),
        (["--attack", "flip"], "unknown attack 'flip'; valid: backdoor, gaussian"),
        (["--attack-params", "trigger=x"], "unknown attack parameter(s) trigger for attack 'gaussian'"),
        (["--poison-fraction", "0"], "poison_fraction=0.0 is out of range; valid: a fraction in (0, 1) or a whole "
                                     "number of poisons >= 1"),
        (["--poison-fraction", "1.5"], "poison_fraction=1.5 is neither a fraction below 1 nor a whole number of "
                                       "poisons; valid: a fraction in (0, 1) or a whole number of poisons >= 1"),
        (["--poison-fraction", "2000"], "poison_fraction=2000 asks for 2000 poisons of 1437 training points; valid: "
                                        "a fraction in (0, 1) or a whole number of poisons 1..1437"),
        (["--eps", "0"], "eps=0.0 is out of range; valid: (0, inf)"),
        (["--eps", "-1"], "eps=-1.0 is out of range"),
        (["--train-optimizer", "lbfgs"], "unknown optimizer 'lbfgs'; valid: adam, sgd"),
        # data problems are found before any run starts (no poison-<hash> run is created for bad input)
        (["--dataset", "npz:junk.npz"], "npz:junk.npz: not a .npz file (not a zip archive)"),
        (["--attack", "backdoor", "--attack-params", "patch_size=9"],
         "patch_size=9 is larger than the (8, 8) images"),
        (["--attack", "backdoor", "--attack-params", "target_class=10"],
         "target_class=10 is out of range; valid: 0..9"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(mlflow_store, capsys, argv, needle):
    Path("junk.npz").write_text("not an archive")
    assert cli.main(["poison", *argv]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and needle in err
    assert not Path("mlflow.db").exists() and not Path("mlruns").exists()


def test_unreachable_tracking_server_is_one_line_without_password(mlflow_store, monkeypatch, capsys):
    uri = "http://alice:s3cret@127.0.0.1:9"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    assert cli.main(["poison", *FAST]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: tracking URI 'http://alice:***@127.0.0.1:9' cannot be reached")
    assert "s3cret" not in err and err.strip().count("\n") == 0


def test_process_exit_code_and_no_traceback(tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    r = subprocess.run([sys.executable, "-m", "unlearn_search", "poison", "--model", "nope"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == "error: unknown model 'nope'; valid: cnn, linear, mlp, resnet18_cifar"
    assert not (tmp_path / "mlflow.db").exists()
