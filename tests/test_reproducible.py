"""The same command on the same machine reproduces every number.

One `tune` command, run twice as separate processes, each in a fresh directory with its own MLflow store and Optuna
journal: every run's params and metrics (durations aside), every trial's params, state and metrics, the trials table
and the verdict, and the registered best model's weights must be identical. Separate processes, so that nothing a
process carries between two runs (global RNG, caches, hash seeds) can hide a difference. A reduced scenario (5
training epochs) with enough trials for TPE (after 5 random start-up trials) and the median pruner to act.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

COMMAND = ["tune", "--method", "ngd", "--n-trials", "7", "--train-epochs", "5", "--seed", "3"]


def _is_duration(name: str) -> bool:
    return name.endswith("time_s")  # wall_time_s, eval_time_s, method_time_s (and best.* / prefixed forms)


def _record(workdir: Path) -> dict[str, object]:
    """Everything the command computed, keyed by run (name path from the top run), without durations."""
    import optuna
    from mlflow.tracking import MlflowClient

    from unlearn_search import tracking
    from unlearn_search.search import connect_storage

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    exps = [e.experiment_id for e in client.search_experiments()
            if e.name in (tracking.EXPERIMENT, tracking.EXPERIMENT + tracking.TRIALS_SUFFIX)]
    runs = client.search_runs(exps, max_results=1000)
    by_id = {r.info.run_id: r for r in runs}

    def path(r):  # type: ignore[no-untyped-def]
        parent = r.data.tags.get("mlflow.parentRunId") or r.data.tags.get("tune_run")  # trials: linked by tag
        return (*path(by_id[parent]), r.info.run_name) if parent in by_id else (r.info.run_name,)

    record: dict[str, object] = {}
    for r in runs:
        key = "/".join(path(r))
        assert key not in record, f"two runs named {key}"
        metrics = {k: v for k, v in r.data.metrics.items() if not _is_duration(k)}
        record[key] = {"params": r.data.params, "metrics": metrics, "status": r.info.status,
                       "state": r.data.tags.get("state"), "verdict": r.data.tags.get("verdict")}
        for artifact in ("trials.csv", "verdict.txt"):
            if any(a.path == artifact for a in client.list_artifacts(r.info.run_id)):
                local = client.download_artifacts(r.info.run_id, artifact, str(workdir))
                record[f"{key}:{artifact}"] = Path(local).read_text()
    study = optuna.load_study(study_name=None, storage=connect_storage(str(workdir / "optuna_journal.log")))
    record["optuna"] = [
        (t.number, t.state.name, t.params, t.values, t.intermediate_values,
         {k: v for k, v in t.user_attrs.get("metrics", {}).items() if not _is_duration(k)},
         t.user_attrs.get("reason"), t.constraints)
        for t in study.trials
    ]
    return record


def _best_weights(workdir: Path) -> dict[str, torch.Tensor]:
    import mlflow

    from unlearn_search import tracking

    mlflow.set_tracking_uri(f"sqlite:///{workdir}/mlflow.db")
    try:
        [mv] = tracking.find_versions(tracking.unlearned_role("ngd"), {})
        return tracking.load_weights(mv.run_id)[1]
    finally:
        mlflow.set_tracking_uri(None)


@pytest.mark.slow
def test_the_same_tune_command_twice_gives_identical_numbers(tmp_path: Path) -> None:
    records, weights = [], []
    for i in range(2):
        work = tmp_path / f"run{i}"
        work.mkdir()
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db"}
        env.pop("MLFLOW_RUN_ID", None)
        proc = subprocess.run([sys.executable, "-m", "unlearn_search", "-q", *COMMAND], cwd=work, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        records.append(_record(work))
        weights.append(_best_weights(work))
    first, second = records
    assert first.keys() == second.keys()
    assert len(first["optuna"]) == 7  # type: ignore[arg-type]
    assert any(" / trial 6" in k for k in first)  # trial runs are part of the record
    for key in first:
        assert first[key] == second[key], key
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name
