"""Scale-out with the components a cluster uses, on one machine: one Optuna study in PostgreSQL shared by several
`tune` workers started through ``mlflow run``, all logging to one MLflow tracking server (backed by PostgreSQL,
serving artifacts), and a worker killed with SIGKILL whose trial the others' heartbeat check fails.

The services are started by the tests (tests/services.py); without Debian's PostgreSQL the module is skipped, except
under CI (``CI`` set), which installs it (.ci/run), where that is a failure.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import services
from mlflow.tracking import MlflowClient

from unlearn_search import tracking

ROOT = Path(__file__).resolve().parents[1]
MLFLOW = str(Path(sys.executable).with_name("mlflow"))
#: Every worker's trials: small, and feasible (utility tolerance 1), so each worker registers a best version.
TUNE = ["-P", "method=gd", "-P", "train_epochs=3", "-P", "utility_tolerance=1"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():  # type: ignore[no-untyped-def]
    """PostgreSQL with two databases (the study's and the tracking server's) and the tracking server."""
    if services.postgres_bin() is None:
        if os.environ.get("CI"):
            pytest.fail("Debian's postgresql is missing: .ci/run installs it for this test")
        pytest.skip("Debian's postgresql is not installed (apt-get install postgresql); CI runs this test")
    with services.postgres() as server:
        optuna_db = services.create_database(server, "optuna")
        mlflow_db = services.create_database(server, "mlflow")
        root = Path(__import__("tempfile").mkdtemp(prefix="unlearn_search_mlflow_"))
        with services.mlflow_server(mlflow_db, root) as url:
            # created once, as a platform team does before starting workers: `mlflow run --experiment-name` on
            # several workers at once races to create it, and MLflow's CLI fails the losers (seen here)
            MlflowClient(url).create_experiment(tracking.EXPERIMENT)
            # the URL workers get: the password comes from the environment, not the command line or MLflow's params
            storage = optuna_db.replace(services.PASSWORD, "${UNLEARN_TEST_PGPASSWORD}")
            yield {"tracking": url, "storage": storage, "optuna_db": optuna_db}


def _worker(cluster: dict[str, str], tmp: Path, n_trials: int, name: str,  # type: ignore[type-arg]
            study: str = "shared") -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_TRACKING_URI": cluster["tracking"], "UNLEARN_TEST_PGPASSWORD": services.PASSWORD,
           "UNLEARN_SEARCH_HEARTBEAT_S": "1", "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # MLproject's python
    env.pop("MLFLOW_EXPERIMENT_ID", None)
    return subprocess.Popen([MLFLOW, "run", str(ROOT), "-e", "tune", "--env-manager", "local",
                             "--experiment-name", tracking.EXPERIMENT, *TUNE,
                             "-P", f"n_trials={n_trials}", "-P", f"storage={cluster['storage']}",
                             "-P", f"study_name={study}"],
                            cwd=tmp, env=env, stdout=open(tmp / f"{name}.log", "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _wait(proc: subprocess.Popen, log: Path, timeout: float = 400) -> None:  # type: ignore[type-arg]
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        services.stop(proc)
        raise AssertionError(f"worker timed out: {log.read_text()[-3000:]}") from None
    assert rc == 0, log.read_text()[-3000:]


_STORAGES: dict[str, optuna.storages.RDBStorage] = {}


@pytest.fixture(scope="module", autouse=True)
def _close_storages():  # type: ignore[no-untyped-def]
    yield
    for storage in _STORAGES.values():
        storage.engine.dispose()
    _STORAGES.clear()


def _storage(url: str) -> optuna.storages.RDBStorage:
    """One storage (one connection pool) per database for the whole test session: polling with a new storage each
    time opens a pool each time, and PostgreSQL ran out of connections ("too many clients")."""
    if url not in _STORAGES:
        _STORAGES[url] = optuna.storages.RDBStorage(url)
    return _STORAGES[url]


def _study(cluster: dict[str, str], name: str = "shared") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=_storage(cluster["optuna_db"]))


def _beating(cluster: dict[str, str], trials: list[optuna.trial.FrozenTrial]) -> bool:
    """Whether any of ``trials`` has a heartbeat recorded (Optuna's ``trial_heartbeats`` table)."""
    if not trials:
        return False
    import sqlalchemy

    with _storage(cluster["optuna_db"]).engine.connect() as conn:
        beating = {row[0] for row in conn.execute(sqlalchemy.text("SELECT trial_id FROM trial_heartbeats"))}
    return any(t._trial_id in beating for t in trials)


def _trials(cluster: dict[str, str], name: str) -> list[optuna.trial.FrozenTrial]:
    """The study's trials; none while no worker has created it yet."""
    try:
        return _study(cluster, name).get_trials(deepcopy=False)
    except KeyError:
        return []


def test_three_workers_share_one_study_and_one_tracking_server(cluster, tmp_path):  # type: ignore[no-untyped-def]
    workers = [_worker(cluster, tmp_path, 4, f"worker{i}") for i in range(3)]
    for i, w in enumerate(workers):
        _wait(w, tmp_path / f"worker{i}.log")
    study = _study(cluster)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 12 and all(t.state.is_finished() for t in trials)
    assert len({t.number for t in trials}) == 12
    params = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(params)) == len(params), "two trials drew the same parameters"

    client = MlflowClient(cluster["tracking"])
    exps = [client.get_experiment_by_name(n) for n in (tracking.EXPERIMENT, tracking.EXPERIMENT + " trials")]
    runs = client.search_runs([e.experiment_id for e in exps], "tags.study = 'shared'", max_results=1000)
    tune_runs = [r for r in runs if r.data.tags.get("kind") == "tune"]
    trial_runs = [r for r in runs if r.data.tags.get("kind") == "trial"]
    assert len(tune_runs) == 3 and {r.info.status for r in tune_runs} == {"FINISHED"}
    assert len({r.data.tags["worker"] for r in tune_runs}) == 3
    assert sorted(int(r.data.tags["trial"]) for r in trial_runs) == sorted(t.number for t in trials)
    # one version per registered trial; the alias points at the study's best trial
    role = tracking.registered_name(tracking.unlearned_role("gd"))
    versions = client.search_model_versions(f"name = '{role}' and tags.study = 'shared'")
    assert len({v.tags["trial"] for v in versions}) == len(versions) >= 1
    from unlearn_search.search import best_trial

    best = client.get_model_version_by_alias(role, tracking.scenario_alias(versions[0].tags["scenario_hash"]))
    assert best.tags["study"] == "shared" and int(best.tags["trial"]) == best_trial(study).number
    # artifacts went through the server: the registered model loads from it
    assert client.list_artifacts(best.run_id)


def test_a_killed_worker_s_trial_is_failed_by_the_heartbeat_and_the_study_resumes(cluster, tmp_path):  # type: ignore[no-untyped-def]
    running: list[optuna.trial.FrozenTrial] = []
    for attempt in range(10):  # a trial lasts a fraction of a second: the kill may land between two trials
        victim = _worker(cluster, tmp_path, 200, f"victim{attempt}", study="kill")
        deadline = time.monotonic() + 300
        # a RUNNING trial whose heartbeat thread has beaten once: killed between the trial's creation and its
        # first beat (milliseconds, but a loaded machine hits it), a trial has no heartbeat for Optuna to go stale
        while not _beating(cluster, [t for t in _trials(cluster, "kill") if t.state.name == "RUNNING"]):
            assert victim.poll() is None, (tmp_path / f"victim{attempt}.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the victim never started a trial"
            time.sleep(0.02)
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)
        running = [t for t in _trials(cluster, "kill") if t.state.name == "RUNNING"]
        if running:
            break
    assert running, "could not kill a worker inside a trial"
    before = sum(t.state.name in ("COMPLETE", "PRUNED") for t in _trials(cluster, "kill"))
    time.sleep(4)  # past the grace period (3 heartbeats of 1 s)
    resumer = _worker(cluster, tmp_path, 1, "resumer", study="kill")
    _wait(resumer, tmp_path / "resumer.log")
    states = {t.number: t.state.name for t in _trials(cluster, "kill")}
    assert "RUNNING" not in states.values()
    assert {states[t.number] for t in running} == {"FAIL"}
    # failed by Optuna's heartbeat, not by the same-host liveness check (which a worker on another host lacks)
    assert "left running by" not in (tmp_path / "resumer.log").read_text()
    assert sum(s in ("COMPLETE", "PRUNED") for s in states.values()) == before + 1  # the study went on
    client = MlflowClient(cluster["tracking"])
    exp = client.get_experiment_by_name(tracking.EXPERIMENT)
    killed = client.search_runs([exp.experiment_id], "tags.study = 'kill' and tags.kind = 'tune'",
                                max_results=100)
    assert "RUNNING" not in {r.info.status for r in killed}  # the victim's tune run was ended (KILLED)
    assert "KILLED" in {r.info.status for r in killed}


def test_an_unreachable_database_is_one_line_with_the_password_redacted(mlflow_store, capsys):
    from unlearn_search import cli

    port = services.free_port()  # nothing listens there
    rc = cli.main(["tune", "--method", "gd", "--n-trials", "1", "--storage",
                   f"postgresql://bob:hunter2@127.0.0.1:{port}/optuna"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "hunter2" not in err and "***" in err
    assert MlflowClient().search_experiments(filter_string="name = 'unlearn_search'") == []  # nothing written
