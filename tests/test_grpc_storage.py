"""Optuna's gRPC storage proxy as a tune storage (``grpc://host:port``), against a proxy server started here in
front of a database storage: the trials land in the database; an unreachable proxy is one line before any work."""

from __future__ import annotations

import threading

import optuna
import pytest
import services
from mlflow.tracking import MlflowClient

from unlearn_search import cli

FAST = ["--train-epochs", "3", "--utility-tolerance", "1"]


@pytest.fixture
def proxy(tmp_path):  # type: ignore[no-untyped-def]
    pytest.importorskip("grpc")
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/behind_the_proxy.db")
    port = services.free_port()
    thread = threading.Thread(target=optuna.storages.run_grpc_proxy_server, args=(storage,),
                              kwargs={"host": "127.0.0.1", "port": port}, daemon=True)
    thread.start()  # serves until the test process ends
    return port, storage


def test_tune_through_a_grpc_storage_proxy(mlflow_store, proxy):
    port, storage = proxy
    assert cli.main(["tune", "--method", "gd", "--n-trials", "3", "--storage", f"grpc://127.0.0.1:{port}",
                     "--study-name", "g", *FAST]) == 0
    study = optuna.load_study(study_name="g", storage=storage)  # read straight from the database behind it
    assert len(study.trials) == 3 and all(t.state.is_finished() for t in study.trials)
    assert study.user_attrs["method"] == "gd"


def test_an_unreachable_grpc_proxy_is_one_line_before_any_work(mlflow_store, capsys):
    pytest.importorskip("grpc")
    port = services.free_port()  # nothing listens there
    rc = cli.main(["tune", "--method", "gd", "--n-trials", "1", "--storage", f"grpc://127.0.0.1:{port}"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "no gRPC storage proxy answered" in err
    assert MlflowClient().search_experiments(filter_string="name = 'unlearn_search'") == []
