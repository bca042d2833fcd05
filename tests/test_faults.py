"""Fault injection with real processes and real signals: a killed, interrupted or terminated `tune` leaves nothing
RUNNING, loses no trial's child run, and its study resumes.

One scenario store is shared by the module (references trained once); each test uses its own study.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from unlearn_search import search

FAST = ["--train-epochs", "3"]
BASE = [sys.executable, "-m", "unlearn_search", "-q"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db", "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_RUN_ID", None)
    subprocess.run([*BASE, "poison", *FAST], cwd=root, env=env, check=True, capture_output=True, timeout=300)
    return root, env


def _tune(study: str, n_trials: int) -> list[str]:
    return [*BASE, "tune", "--method", "gd", "--n-trials", str(n_trials), "--storage", "j.log", "--study-name",
            study, *FAST]


def _study(root: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=search.connect_storage(str(root / "j.log")))


def _signal_mid_trial(root: Path, env: dict, study: str, sig: int) -> tuple[subprocess.Popen, str]:
    """Start a long tune, wait until it has finished two trials and is inside a third, send ``sig``."""
    for _ in range(3):  # the signal may land between two trials; then try again (new study name)
        name = f"{study}-{_}"
        proc = subprocess.Popen(_tune(name, 500), cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            try:
                trials = _study(root, name).get_trials(deepcopy=False)
            except KeyError:  # not created yet
                trials = []
            done = sum(t.state.is_finished() for t in trials)
            if done >= 2 and any(t.state == optuna.trial.TrialState.RUNNING for t in trials):
                proc.send_signal(sig)
                break
            time.sleep(0.02)
        proc.wait(timeout=120)
        if sig != signal.SIGKILL or any(t.state == optuna.trial.TrialState.RUNNING
                                        for t in _study(root, name).get_trials(deepcopy=False)):
            return proc, name
    raise AssertionError("could not catch a trial running")


def _runs(root: Path, study: str) -> list:
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    exps = [client.get_experiment_by_name(n) for n in ("unlearn_search", "unlearn_search trials")]
    return client.search_runs([e.experiment_id for e in exps if e is not None], f"tags.study = '{study}'",
                              max_results=5000)


def _assert_whole(root: Path, name: str) -> None:
    """Nothing RUNNING (study or MLflow), and every finished trial has exactly one child run."""
    trials = _study(root, name).get_trials(deepcopy=False)
    assert not [t.number for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    runs = _runs(root, name)
    assert [r.info.run_id for r in runs if r.info.status == "RUNNING"] == []
    children = Counter(r.data.tags["trial"] for r in runs if "trial" in r.data.tags)
    assert children == Counter(str(t.number) for t in trials if t.state.is_finished())


def test_kill_9_leaves_nothing_running_once_the_study_is_resumed(store):
    root, env = store
    proc, name = _signal_mid_trial(root, env, "killed", signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    stale = [t.number for t in _study(root, name).trials if t.state == optuna.trial.TrialState.RUNNING]
    (killed_run,) = [r for r in _runs(root, name) if r.info.status == "RUNNING" and "trial" not in r.data.tags]
    # the same command again: it resumes the study, fails the dead worker's trial, ends the dead run KILLED with
    # its reason, and writes the child runs the dead worker's background writer never did
    r = subprocess.run(_tune(name, 2), cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    study = _study(root, name)
    assert [study.trials[n].state for n in stale] == [optuna.trial.TrialState.FAIL] * len(stale)
    run = MlflowClient(f"sqlite:///{root}/mlflow.db").get_run(killed_run.info.run_id)
    assert run.info.status == "KILLED" and "died; found when run" in run.data.tags["error"]
    _assert_whole(root, name)
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) >= 4  # 2 before, 2 after


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"),
                                             (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_interrupt_or_terminate_is_one_line_a_killed_run_and_a_failed_trial(store, sig, code, word):
    root, env = store
    proc, name = _signal_mid_trial(root, env, f"sig{int(sig)}", sig)
    err = proc.stderr.read().decode().strip()
    assert proc.returncode == code
    assert err.startswith(word) and len(err.splitlines()) == 1, err
    (parent,) = [r for r in _runs(root, name) if "trial" not in r.data.tags]
    assert parent.info.status == "KILLED"
    assert parent.data.tags["error"] in ("KeyboardInterrupt: interrupted", "Terminated: interrupted")
    study = _study(root, name)
    assert any(t.state == optuna.trial.TrialState.FAIL for t in study.trials)  # the interrupted trial
    _assert_whole(root, name)
    r = subprocess.run(_tune(name, 1), cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]  # resumable
    _assert_whole(root, name)


def test_under_mlflow_run_a_failed_run_says_why(tmp_path):
    """`mlflow run` creates the run before our process starts and ends it FAILED on a non-zero exit, without a
    reason; the tool tags it with its one-line error. (mlflow run itself exits 1 whatever our status was.)"""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for leaked in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(leaked, None)
    r = subprocess.run([str(Path(sys.executable).parent / "mlflow"), "run", str(root), "-e", "gd", "-P", "lr=-inf",
                        "--env-manager", "local", "--experiment-name", "faults"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    assert "error: lr=-inf is out of range; valid: a finite number in (0, inf)" in r.stderr
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs([client.get_experiment_by_name("faults").experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == "error: lr=-inf is out of range; valid: a finite number in (0, inf)"


def _versions(uri: str, role: str) -> list:
    client = MlflowClient(uri)
    try:
        return client.search_model_versions(f"name = 'unlearn_search.{role}'")
    except Exception:  # no such registered model yet
        return []


def test_two_poison_processes_on_a_fresh_store_train_the_scenario_once(tmp_path):
    """Started together on an empty store: the schema race is absorbed (no 'cannot be reached'), one process trains
    and registers the scenario, the other waits for it and reuses it."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_RUN_ID", None)
    procs = [subprocess.Popen([*BASE, "poison", *FAST], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-1500:] for _, err in outs]
    assert sorted("(reused)" in out for out, _ in outs) == [False, True]
    for role in ("poisoned", "retrain"):
        assert len(_versions(uri, role)) == 1, role


def test_a_scenario_that_fails_while_registering_leaves_no_version(mlflow_store, monkeypatch, capsys):
    """The disk fills up while the retrained model is logged: the poisoned model registered a moment before is
    removed again, the run ends FAILED with the reason, and the next attempt builds one complete pair."""
    from unlearn_search import cli, tracking

    real, calls = tracking.log_model_unregistered, []

    def full_disk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(tracking, "log_model_unregistered", full_disk)
    assert cli.main(["poison", *FAST]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "error: no space left on device (writing a file); free space and run the same command")
    assert _versions(mlflow_store, "poisoned") == [] and _versions(mlflow_store, "retrain") == []
    client = MlflowClient(mlflow_store)
    (run,) = [r for r in client.search_runs([client.get_experiment_by_name("unlearn_search").experiment_id])
              if r.info.run_name.startswith("poison-")]
    assert run.info.status == "FAILED" and "No space left on device" in run.data.tags["error"]
    monkeypatch.setattr(tracking, "log_model_unregistered", real)
    assert cli.main(["poison", *FAST]) == 0
    assert len(_versions(mlflow_store, "poisoned")) == 1 and len(_versions(mlflow_store, "retrain")) == 1
