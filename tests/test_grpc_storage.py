"""Optuna's gRPC storage proxy as a tune storage (``grpc://host:port``), against a proxy server started here in
front of a database storage: the trials land in the database; workers beat through the proxy, so a dead worker's
trial is failed on any host; an unreachable proxy, or one whose database fails, is one line before any work."""

from __future__ import annotations

import threading
import time
import warnings

import optuna
import pytest
import services
from mlflow.tracking import MlflowClient

from unlearn_search import cli, search

FAST = ["--train-epochs", "3", "--utility-tolerance", "1"]


def _serve(storage: optuna.storages.BaseStorage) -> int:
    """A proxy server for ``storage`` on a free port of 127.0.0.1; serves until the test process ends."""
    pytest.importorskip("grpc")
    port = services.free_port()

    def serve() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.run_grpc_proxy_server(storage, host="127.0.0.1", port=port)

    threading.Thread(target=serve, daemon=True).start()
    return port


@pytest.fixture
def proxy(tmp_path):  # type: ignore[no-untyped-def]
    # get_storage, as the docs run the server: an RDBStorage behind Optuna's in-process cache
    storage = optuna.storages.get_storage(f"sqlite:///{tmp_path}/behind_the_proxy.db")
    return _serve(storage), storage


def test_tune_through_a_grpc_storage_proxy(mlflow_store, proxy):
    port, storage = proxy
    assert cli.main(["tune", "--method", "gd", "--n-trials", "3", "--storage", f"grpc://127.0.0.1:{port}",
                     "--study-name", "g", *FAST]) == 0
    study = optuna.load_study(study_name="g", storage=storage)  # read straight from the database behind it
    assert len(study.trials) == 3 and all(t.state.is_finished() for t in study.trials)
    assert study.user_attrs["method"] == "gd"
    # each trial beat through the proxy while it ran (Optuna's heartbeat thread, started by Study.optimize)
    assert all(search.HEARTBEAT_ATTR in t.system_attrs for t in study.trials)


def test_a_dead_worker_s_trial_of_another_host_is_failed_by_the_heartbeat_through_the_proxy(proxy, monkeypatch):
    port, _ = proxy
    monkeypatch.setenv("UNLEARN_SEARCH_HEARTBEAT_S", "1")  # grace period: 3 s
    storage = search.connect_storage(f"grpc://127.0.0.1:{port}")
    assert isinstance(storage, search.GrpcProxyWithHeartbeat)
    study = optuna.create_study(study_name="beats", storage=storage)
    study_id = storage.get_study_id_from_name("beats")
    dead, live, silent = (storage.create_new_trial(study_id) for _ in range(3))
    for trial_id in (dead, live, silent):  # another host: the same-host liveness check cannot judge these workers
        storage.set_trial_user_attr(trial_id, "worker", "elsewhere:1:1")
    storage.set_trial_system_attr(dead, search.HEARTBEAT_ATTR, time.time() - 10)  # its last beat, 10 s ago
    storage.record_heartbeat(live)
    search.fail_dead_trials(study)
    states = {t._trial_id: t.state for t in study.get_trials(deepcopy=False)}
    running = optuna.trial.TrialState.RUNNING
    assert states == {dead: optuna.trial.TrialState.FAIL, live: running, silent: running}  # no beat yet: left alone


def test_an_unreachable_grpc_proxy_is_one_line_before_any_work(mlflow_store, capsys):
    pytest.importorskip("grpc")
    port = services.free_port()  # nothing listens there
    rc = cli.main(["tune", "--method", "gd", "--n-trials", "1", "--storage", f"grpc://127.0.0.1:{port}"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "no gRPC storage proxy answered" in err
    assert MlflowClient().search_experiments(filter_string="name = 'unlearn_search'") == []


class _DatabaseDown(optuna.storages.InMemoryStorage):
    """The storage behind a proxy whose database went away: every call fails on the server."""

    def get_study_id_from_name(self, study_name: str) -> int:
        raise RuntimeError("connection to server at db failed: Connection refused")


def test_a_proxy_whose_database_fails_is_one_line_before_any_work(mlflow_store, capsys):
    port = _serve(_DatabaseDown())
    rc = cli.main(["tune", "--method", "gd", "--n-trials", "1", "--storage", f"grpc://127.0.0.1:{port}"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "answered UNKNOWN" in err and "Connection refused" in err
    assert MlflowClient().search_experiments(filter_string="name = 'unlearn_search'") == []
