"""The process that writes finished child runs (tune trials) to MLflow while the study computes on.

A run costs MLflow's store about 15-20 ms of Python (SQLAlchemy) per trial on SQLite. Written from a thread of the
tuning process it competed for the interpreter lock with the trial's own training loop, which was measured to slow
the method itself by about as much; from a separate process it does not. This module imports only MLflow (not
torch, not the rest of the package), so the process starts in about a second.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from typing import Any

_clients: dict[str, Any] = {}  # one client per tracking URI, for the process's life


def init() -> None:
    """Process initializer: MLflow imported up front. The process ignores SIGINT and SIGTERM: a Ctrl-C
    reaches the whole foreground process group, and the parent, which handles it, still needs the queued runs
    written (it waits for them before it ends). When the parent dies, the process exits (`_exit_with_parent`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    import mlflow.tracking  # noqa: F401 (imported once, up front)


def _exit_with_parent(parent: int) -> None:
    """End this process once its parent is gone (killed with SIGKILL, say): the queue it reads from never closes,
    since this process holds both of its ends, so without this it would wait forever. A run it was writing at that
    moment may stay RUNNING; the next worker that opens the study ends it (`tune.reconcile`) and writes the runs of
    trials that have none."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def write(tracking_uri: str, experiment_id: str, tags: dict[str, str], name: str, start_ms: int, end_ms: int,
          params: dict[str, Any], metrics: dict[str, float], failed: bool) -> str:
    """Create a finished run in the store at ``tracking_uri``: three store calls (create with tags, one batch of
    metrics and params, terminate). Also called in the tuning process itself when the writer process is gone."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = _clients.get(tracking_uri)
    if client is None:
        client = _clients[tracking_uri] = MlflowClient(tracking_uri)
    child = client.create_run(experiment_id, start_time=start_ms, tags=tags, run_name=name)
    finite = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
    client.log_batch(child.info.run_id, metrics=[Metric(k, v, end_ms, 0) for k, v in finite.items()],
                     params=[Param(k, str(v)) for k, v in params.items()])
    client.set_terminated(child.info.run_id, status="FAILED" if failed else "FINISHED", end_time=end_ms)
    return str(child.info.run_id)
