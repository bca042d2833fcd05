"""Every run records what produced it (tags ``provenance.*``), trial child runs included; child runs end when their
trial ended, not when the background thread wrote them."""

from __future__ import annotations

import importlib.metadata
import platform
import time

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from unlearn_search import context, tracking
from unlearn_search.context import select_device

EXPECTED_NAMES = {
    "unlearn_search", "torch", "numpy", "scipy", "optuna", "mlflow", "scikit-learn", "timm", "python", "os", "cpu",
    "cpu_count", "device", "torch_threads", "torch_interop_threads", "deterministic_algorithms",
    "cudnn_deterministic", "cudnn_benchmark",
}


def _provenance_of(run_id: str) -> dict[str, str]:
    tags = MlflowClient().get_run(run_id).data.tags
    return {k.removeprefix(tracking.PROVENANCE): v for k, v in tags.items() if k.startswith(tracking.PROVENANCE)}


def test_a_run_carries_the_provenance_tags_with_the_right_values(mlflow_store, monkeypatch):
    monkeypatch.setattr(context, "_selected", [])  # this test's device choice does not outlive it
    select_device("cpu")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # read when the run starts, not frozen at the first run of the process
        with tracking.run("outer", tags={"entry_point": "test"}) as outer, tracking.run("inner", nested=True) as inner:
            pass
    finally:
        torch.set_num_threads(threads)
    for run in (outer, inner):
        p = _provenance_of(run.info.run_id)
        assert set(p) >= EXPECTED_NAMES, EXPECTED_NAMES - set(p)
        assert p["torch"] == torch.__version__
        for package in ("numpy", "optuna", "mlflow", "scikit-learn", "timm", "unlearn_search"):
            assert p[package] == importlib.metadata.version(package)
        assert p["python"] == f"{platform.python_implementation()} {platform.python_version()}"
        assert p["os"] == platform.platform()
        assert p["cpu"] and p["cpu"] != "unknown"
        assert p["device"] == "cpu"
        assert p["torch_threads"] == "1"
        assert p["deterministic_algorithms"] == str(torch.are_deterministic_algorithms_enabled()).lower()
        assert p["cudnn_deterministic"] == str(torch.backends.cudnn.deterministic).lower()
        assert p["cudnn_benchmark"] == str(torch.backends.cudnn.benchmark).lower()
    assert MlflowClient().get_run(outer.info.run_id).data.tags["entry_point"] == "test"  # the caller's tags too


def test_child_runs_carry_provenance_and_their_trial_times(mlflow_store):
    with tracking.run("parent") as parent:
        writer = tracking.ChildRunWriter()
        start = int(time.time() * 1000) - 5000
        writer.submit("trial-0", start, {"lr": 0.1}, {"removal": 0.5, "bad": float("nan")},
                      {"study": "s", "trial": "0", "state": "complete"}, end_ms=start + 1234)
        writer.close()
    [child] = MlflowClient().search_runs([parent.info.experiment_id],
                                         f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert _provenance_of(child.info.run_id) == _provenance_of(parent.info.run_id)
    assert child.info.start_time == start and child.info.end_time == start + 1234
    assert child.data.metrics == {"removal": 0.5} and child.data.params == {"lr": "0.1"}
    assert child.info.status == "FINISHED" and child.data.tags["state"] == "complete"
    assert mlflow.active_run() is None


def test_child_runs_written_by_a_writer_process_that_died_are_written_here(mlflow_store):
    """The writer process killed from outside (OOM killer, a stray kill): what it had not written is written by the
    tuning process itself when it flushes, so no trial run is lost."""
    import os
    import signal

    with tracking.run("parent") as parent:
        writer = tracking.ChildRunWriter()
        writer.submit("first", 0, {}, {"removal": 0.1}, {"trial": "0"})
        writer.flush()
        assert writer.pool is not None
        for pid in list(writer.pool._processes):  # the writer process (pid of a ProcessPoolExecutor worker)
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        writer.submit("second", 0, {}, {"removal": 0.2}, {"trial": "1"})
        writer.close()
    runs = MlflowClient().search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(r.info.run_name for r in runs) == ["first", "second"]
    assert {r.info.run_name: r.data.metrics["removal"] for r in runs} == {"first": 0.1, "second": 0.2}


@pytest.mark.parametrize(("env", "cpus", "expected"), [
    ({}, 2, 1), ({}, 1, 1), ({}, 8, 7), ({"OMP_NUM_THREADS": "2"}, 2, None), ({"UNLEARN_SEARCH_THREADS": "3"}, 2, 3)])
def test_torch_leaves_a_core_free_unless_told(monkeypatch, env, cpus, expected):
    import os

    from unlearn_search.context import THREAD_ENV, leave_a_core

    for k in THREAD_ENV:
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(cpus)  # torch's own default: one thread per core
        got = leave_a_core()
        assert got == (cpus if expected is None else expected) == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def test_the_writer_process_ends_when_its_parent_is_killed(tmp_path):
    """A tune worker killed with SIGKILL must not leave its MLflow writer process behind (it would wait forever)."""
    import os
    import signal
    import subprocess
    import sys

    script = tmp_path / "parent.py"
    script.write_text(
        "import sys, time\n"
        "from unlearn_search import tracking\n"
        "if __name__ == '__main__':\n"
        "    tracking.configure('w')\n"
        "    with tracking.run('parent'):\n"
        "        w = tracking.ChildRunWriter()\n"
        "        w.submit('child', 0, {}, {'removal': 0.1}, {})\n"
        "        w.flush()\n"
        "        print(*w.pool._processes, flush=True)\n"
        "        time.sleep(600)\n")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    parent = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
    try:
        (writer,) = (int(x) for x in parent.stdout.readline().split())  # type: ignore[union-attr]
    finally:
        parent.kill()
        parent.wait(timeout=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(writer, 0)
        except ProcessLookupError:
            return
        with open(f"/proc/{writer}/stat") as f:  # a zombie (exited, not yet reaped by init) is gone too
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return
        time.sleep(0.2)
    os.kill(writer, signal.SIGKILL)
    raise AssertionError("the writer process outlived its killed parent")
