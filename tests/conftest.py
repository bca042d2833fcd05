"""Shared fixtures: tiny CPU data and models, and an isolated MLflow store per test."""

from __future__ import annotations

import pytest
import torch

from unlearn_search.conformance import N_CLASSES, TINY_SHAPE
from unlearn_search.conformance import tiny_splits as make_tiny_splits
from unlearn_search.context import RunContext
from unlearn_search.methods import Splits
from unlearn_search.models import ModelSpec, create_model
from unlearn_search.training import TrainConfig, train


@pytest.fixture(autouse=True)
def _restore_torch_threads():  # type: ignore[no-untyped-def]
    """`cli.main` sets torch's thread count for its process (`context.leave_a_core`); restored after each test, so
    a test's float results do not depend on which tests ran before it (SSD's pinned sums did)."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture
def ctx() -> RunContext:
    return RunContext(seed=0, device=torch.device("cpu"))


@pytest.fixture
def tiny_splits() -> Splits:
    return make_tiny_splits()


@pytest.fixture
def tiny_model(tiny_splits: Splits, ctx: RunContext) -> torch.nn.Module:
    """A small MLP (three blocks) trained a little on retain ∪ forget: the 'poisoned' model of the tiny setting."""
    model = create_model(ModelSpec("mlp", TINY_SHAPE, N_CLASSES), seed=0)
    x, y = tiny_splits.full()
    return train(model, x, y, TrainConfig(epochs=5, batch_size=32), ctx)


@pytest.fixture
def tiny_cnn(tiny_splits: Splits, ctx: RunContext) -> torch.nn.Module:
    model = create_model(ModelSpec("cnn", TINY_SHAPE, N_CLASSES), seed=0)
    x, y = tiny_splits.full()
    return train(model, x, y, TrainConfig(epochs=2, batch_size=32), ctx)


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """An empty SQLite tracking store in a temp dir, used as the working directory."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    import mlflow
    import mlflow.tracking.fluent

    # mlflow.set_experiment (tracking.configure) remembers the experiment in a global and in MLFLOW_EXPERIMENT_ID:
    # another test's experiment id must not follow this test into its fresh store
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


@pytest.fixture
def cli_exit():  # type: ignore[no-untyped-def]
    """Run the CLI and return its exit status: main's return value, or argparse's (it exits on bad syntax)."""
    from unlearn_search import cli

    def run(argv: list[str]) -> int:
        try:
            return cli.main(argv)
        except SystemExit as e:
            return int(e.code or 0)

    return run
