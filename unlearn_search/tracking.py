"""Everything that talks to MLflow (tracking and Model Registry). Algorithms never import this module.

Layout of what lands in MLflow:
- a *scenario* run (entry point ``poison``): the scenario's parameters, ``scenario_hash`` tag, the poisons as an
  artifact (``poisoning/poisoning.npz``), and one nested child run per reference model (``poisoned``, ``retrain``)
  holding that model's metrics under plain names (``test_acc``, ``gus_z``, ...), its weights-only state
  (``weights/``) and the pickled MLflow model, registered as ``unlearn_search.<role>`` with lineage tags.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import torch
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient
from torch import nn

from . import redact
from .errors import UsageError
from .models import ModelSpec

log = logging.getLogger(__name__)

EXPERIMENT = "unlearn_search"
REGISTRY_PREFIX = "unlearn_search"


def registered_name(role: str) -> str:
    """Registered-model name for a role: ``poisoned``, ``retrain`` (the scenario's references) or
    ``unlearned.<method>`` (see `unlearned_role`)."""
    return f"{REGISTRY_PREFIX}.{role}"


def unlearned_role(method: str) -> str:
    """The registry role of a method's unlearned models; kept apart from the references, so that the ``retrain``
    *method* (a possibly partial retraining) can never be mistaken for the scenario's retrained reference."""
    return f"unlearned.{method}"


redact_uri = redact.redact_uri  # every password form a URL can carry, replaced by *** (see `redact`)


def configure(experiment: str | None = None) -> None:
    """Check that the tracking store answers, then pick the experiment.

    The tracking URI is MLflow's own default (``sqlite:///mlflow.db`` in the working directory) unless
    ``MLFLOW_TRACKING_URI`` is set. Inside ``mlflow run`` (``MLFLOW_RUN_ID`` set) the run's experiment is kept.
    """
    uri = mlflow.get_tracking_uri()
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"  # fail fast on an unreachable server
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "10"
    try:
        MlflowClient().search_experiments(max_results=1)
    except Exception as e:  # MLflow raises many types here (connection, SQL, scheme); all mean "unusable"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        first = redact.redact(first, uri)
        raise UsageError(f"tracking URI {redact_uri(uri)!r} cannot be reached: {first[:200]}") from None
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if not os.environ.get("MLFLOW_RUN_ID"):
        mlflow.set_experiment(experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT)


@contextlib.contextmanager
def run(name: str, tags: dict[str, str] | None = None, nested: bool = False) -> Iterator[Run]:
    """Start (or, for the outermost run inside ``mlflow run``, resume) a run.

    How it ends says why: an interrupt (Ctrl-C, or SIGTERM turned into one by the CLI) ends it KILLED, any other
    exception FAILED, both with the one-line reason as tag ``error`` (bad input, divergence, a crash)."""
    with mlflow.start_run(run_name=name, nested=nested, tags=tags) as r:
        if tags:
            mlflow.set_tags(tags)
        try:
            yield r
        except BaseException as e:
            interrupted = isinstance(e, KeyboardInterrupt)
            reason = (f"{type(e).__name__}: interrupted" if interrupted
                      else f"{type(e).__name__}: {' '.join(str(e).split())}")
            with contextlib.suppress(Exception):  # the store may be what failed (a full disk): end it if it can
                mlflow.set_tag("error", reason[:500])
                mlflow.end_run("KILLED" if interrupted else "FAILED")
            raise


def log_params(params: dict[str, Any]) -> None:
    """Log params, skipping keys the run already has: under ``mlflow run`` MLflow itself logs each ``-P`` value as
    the user spelled it (``.1`` for 0.1), and MLflow refuses to change a logged param."""
    run = mlflow.active_run()
    existing = MlflowClient().get_run(run.info.run_id).data.params if run is not None else {}
    mlflow.log_params({k: v for k, v in params.items() if k not in existing})


def log_metrics(metrics: dict[str, float], prefix: str = "", step: int | None = None) -> None:
    clean = {f"{prefix}{k}": float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
    mlflow.log_metrics(clean, step=step)


def set_tags(tags: dict[str, Any]) -> None:
    mlflow.set_tags({k: str(v) for k, v in tags.items()})


def log_bytes(data: bytes, artifact_path: str) -> None:
    """Log ``data`` as the artifact file ``artifact_path`` (``dir/name``) of the active run."""
    directory, _, filename = artifact_path.rpartition("/")
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / filename
        p.write_bytes(data)
        mlflow.log_artifact(str(p), artifact_path=directory or None)


def log_text(text: str, artifact_path: str) -> None:
    mlflow.log_text(text, artifact_path)


def download_bytes(run_id: str, artifact_path: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path, dst_path=tmp)
        return Path(local).read_bytes()


def _pip_requirements() -> list[str]:
    # Explicit requirements: MLflow would otherwise infer them by importing the model, which is slow.
    import numpy
    import scipy
    import sklearn

    return [
        f"torch=={torch.__version__.split('+')[0]}",
        f"numpy=={numpy.__version__}",
        f"scipy=={scipy.__version__}",
        f"scikit-learn=={sklearn.__version__}",
    ]


def log_model(
    model: nn.Module, spec: ModelSpec, role: str, tags: dict[str, str], input_example: torch.Tensor
) -> ModelVersion:
    """Log ``model`` to the active run and register it as ``unlearn_search.<role>`` with ``tags``.

    Two forms are stored: the MLflow PyTorch model, in MLflow's ``pt2`` format (a ``torch.export`` graph:
    ``mlflow.pytorch.load_model`` works without unlearn_search installed and unpickles no code; its signature comes
    from ``input_example``) and, as run artifacts under ``weights/``,
    the weights-only state dict and the `ModelSpec`, which `load_weights` turns back into a trainable module
    without unpickling code.
    """
    model = model.cpu().eval()
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(model.state_dict(), Path(tmp) / "state_dict.pt")
        (Path(tmp) / "spec.json").write_text(json.dumps(spec.to_dict()))
        mlflow.log_artifacts(tmp, artifact_path="weights")
    info = mlflow.pytorch.log_model(
        model,
        name="model",
        registered_model_name=registered_name(role),
        pip_requirements=_pip_requirements(),
        serialization_format="pt2",
        input_example=input_example.cpu().numpy(),
        await_registration_for=0,
    )
    client = MlflowClient()
    version = str(info.registered_model_version)
    name = registered_name(role)
    for k, v in tags.items():
        client.set_model_version_tag(name, version, k, str(v))
    return client.get_model_version(name, version)


def load_weights(run_id: str) -> tuple[ModelSpec, dict[str, torch.Tensor]]:
    """The weights-only state and spec stored by `log_model` in run ``run_id`` (no code is unpickled)."""
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="weights", dst_path=tmp))
        spec = ModelSpec.from_dict(json.loads((local / "spec.json").read_text()))
        state = torch.load(local / "state_dict.pt", map_location="cpu", weights_only=True)
    return spec, state


def find_versions(role: str, tags: dict[str, str]) -> list[ModelVersion]:
    """Registered versions of ``unlearn_search.<role>`` carrying all ``tags``, newest first."""
    client = MlflowClient()
    name = registered_name(role)
    filt = " and ".join([f"name = '{name}'"] + [f"tags.`{k}` = '{v}'" for k, v in tags.items()])
    try:
        found = client.search_model_versions(filt)
    except mlflow.exceptions.MlflowException as e:
        if "RESOURCE_DOES_NOT_EXIST" in str(e.error_code):
            return []
        raise
    return sorted(found, key=lambda v: int(v.version), reverse=True)


def run_metrics(run_id: str) -> dict[str, float]:
    return dict(MlflowClient().get_run(run_id).data.metrics)


def active_run_id() -> str:
    r = mlflow.active_run()
    if r is None:
        raise RuntimeError("no active MLflow run")
    return r.info.run_id


@dataclass(frozen=True)
class VersionRef:
    """A registered model version, by name and number, with the run that produced it."""

    name: str
    version: str
    run_id: str

    @classmethod
    def of(cls, mv: ModelVersion) -> VersionRef:
        return cls(name=mv.name, version=str(mv.version), run_id=str(mv.run_id))

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def __str__(self) -> str:
        return f"{self.name}/{self.version}"


def log_figures(name: str, figures: tuple[Any, Any]) -> None:
    """Log a (matplotlib, plotly) pair as ``plots/<name>.png`` and ``plots/<name>.html``."""
    import matplotlib.pyplot as plt

    mpl, ply = figures
    mlflow.log_figure(mpl, f"plots/{name}.png")
    plt.close(mpl)
    mlflow.log_figure(ply, f"plots/{name}.html")


def set_alias(role: str, alias: str, version: str) -> None:
    MlflowClient().set_registered_model_alias(registered_name(role), alias, version)


class ChildRunWriter:
    """Writes finished child runs of the active run from a background thread.

    Used per tune trial: each child run is three store calls (create, one batch, terminate) made while the next
    trial already computes, so MLflow's per-call cost does not add to the study's time. `close` waits for every
    write and re-raises the first error, so nothing is silently lost.
    """

    def __init__(self) -> None:
        from concurrent.futures import Future, ThreadPoolExecutor

        parent = mlflow.active_run()
        if parent is None:
            raise RuntimeError("no active MLflow run to attach child runs to")
        self.parent_id, self.experiment_id = parent.info.run_id, parent.info.experiment_id
        self.client = MlflowClient()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-child-runs")
        self.futures: list[Future[str]] = []

    def submit(self, name: str, start_ms: int, params: dict[str, Any], metrics: dict[str, float],
               tags: dict[str, str], failed: bool = False) -> None:
        self.futures.append(self.pool.submit(self._write, name, start_ms, dict(params), dict(metrics), dict(tags),
                                             failed))

    def _write(self, name: str, start_ms: int, params: dict[str, Any], metrics: dict[str, float],
               tags: dict[str, str], failed: bool) -> str:
        from mlflow.entities import Metric, Param
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

        all_tags = {**tags, MLFLOW_PARENT_RUN_ID: self.parent_id, MLFLOW_RUN_NAME: name}
        child = self.client.create_run(self.experiment_id, start_time=start_ms, tags=all_tags, run_name=name)
        now = int(time.time() * 1000)
        finite = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        self.client.log_batch(child.info.run_id, metrics=[Metric(k, v, now, 0) for k, v in finite.items()],
                              params=[Param(k, str(v)) for k, v in params.items()])
        self.client.set_terminated(child.info.run_id, status="FAILED" if failed else "FINISHED")
        return str(child.info.run_id)

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        for f in self.futures:
            f.result()  # re-raise a failed write


def search_runs(filter_string: str) -> list[Run]:
    """Every run of the active run's experiment matching ``filter_string`` (all pages)."""
    client = MlflowClient()
    experiment = mlflow.active_run()
    if experiment is None:
        raise RuntimeError("no active MLflow run")
    out: list[Run] = []
    token = None
    while True:
        page = client.search_runs([experiment.info.experiment_id], filter_string, max_results=1000, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


def end_run_as(run_id: str, status: str, reason: str) -> None:
    """End another run (e.g. a dead worker's) with ``status`` (KILLED, FAILED) and the tag ``error`` = ``reason``."""
    client = MlflowClient()
    client.set_tag(run_id, "error", reason[:500])
    client.set_terminated(run_id, status=status)


def delete_version(role: str, version: str) -> None:
    MlflowClient().delete_model_version(registered_name(role), version)


def tag_launcher_run(reason: str) -> None:
    """Under ``mlflow run`` the run exists before this process starts (``MLFLOW_RUN_ID``), and MLflow ends it FAILED
    when the process fails, without a reason: give it the one-line reason as tag ``error``. Best effort: the store
    may be what failed."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return
    with contextlib.suppress(Exception):
        client = MlflowClient()
        if "error" not in client.get_run(run_id).data.tags:  # a run that ended itself already said why
            client.set_tag(run_id, "error", reason[:500])
