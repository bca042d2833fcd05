"""Everything that talks to MLflow (tracking and Model Registry). Algorithms never import this module.

Layout of what lands in MLflow:
- a *scenario* run (entry point ``poison``): the scenario's parameters, ``scenario_hash`` tag, the poisons as an
  artifact (``poisoning/poisoning.npz``), and one nested child run per reference model (``poisoned``, ``retrain``)
  holding that model's metrics under plain names (``test_acc``, ``gus_z``, ...), its weights-only state
  (``weights/``) and the pickled MLflow model, registered as ``unlearn_search.<role>`` with lineage tags.
"""

from __future__ import annotations

import contextlib
import functools
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
        with _schema_lock(uri):  # a fresh store's schema is created by the first call: one process at a time
            _retry_races(lambda: MlflowClient().search_experiments(max_results=1))
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
        name = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
        with _schema_lock(uri):
            _retry_races(lambda: mlflow.set_experiment(name))


@contextlib.contextmanager
def _schema_lock(uri: str) -> Iterator[None]:
    """For a local SQLite store, an exclusive file lock (``<db>.lock``) while the schema or the experiment may be
    created: MLflow's schema migrations, run by two processes on a fresh file at once, fail and can leave the store
    broken ("table _alembic_tmp_tags already exists"). A tracking server creates its schema itself, once."""
    if not uri.startswith("sqlite:///") or uri == "sqlite:///:memory:":
        yield
        return
    import fcntl

    path = Path(uri.removeprefix("sqlite:///").split("?")[0]).expanduser()
    if not path.parent.is_dir():
        yield  # the store's own error names the missing directory
        return
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


#: What a store says when two processes create the same schema, table or experiment at once.
_RACE_MARKERS = ("already exists", "unique constraint", "database is locked", "duplicate", "resource_already_exists",
                 "alembic_version", "no such table", "migration")


def _retry_races(call: Any, attempts: int = 6) -> Any:
    """``call()``, retried a few times when it fails because another process is creating the same thing (a fresh
    store's schema, the experiment): the race is absorbed instead of reported as an unreachable store."""
    for attempt in range(attempts):
        try:
            return call()
        except Exception as e:
            if attempt + 1 == attempts or not any(m in str(e).lower() for m in _RACE_MARKERS):
                raise
            time.sleep(0.3 * (attempt + 1))


#: Prefix of the provenance tags every run carries (see `provenance`).
PROVENANCE = "provenance."
#: Packages whose installed versions the provenance tags record.
PROVENANCE_PACKAGES = ("unlearn_search", "torch", "numpy", "scipy", "optuna", "mlflow", "scikit-learn", "timm")


def provenance() -> dict[str, str]:
    """What produced a run, as tags ``provenance.<name>``: the versions of `PROVENANCE_PACKAGES` (torch's with its
    build, e.g. ``2.14.1+cu130``), ``python``, ``os``, ``cpu`` (model name) and ``cpu_count`` (CPUs this process may
    use), ``git_commit`` and ``git_dirty`` when the package runs from a git work tree, ``device`` (the device the
    command selected, with the GPU's name and CUDA/cuDNN versions on CUDA), ``torch_threads`` and
    ``torch_interop_threads``, and the determinism switches ``deterministic_algorithms``
    (``torch.are_deterministic_algorithms_enabled()``), ``cudnn_deterministic`` and ``cudnn_benchmark``.

    The machine and package facts are computed once per process; threads, device and switches are read at each call
    (attribute reads: a command may set them after the first run started).
    """
    from .context import selected_device

    device = selected_device()
    return {
        **_static_provenance(),
        f"{PROVENANCE}device": _device_description(str(device)),
        f"{PROVENANCE}torch_threads": str(torch.get_num_threads()),
        f"{PROVENANCE}torch_interop_threads": str(torch.get_num_interop_threads()),
        f"{PROVENANCE}deterministic_algorithms": str(torch.are_deterministic_algorithms_enabled()).lower(),
        f"{PROVENANCE}cudnn_deterministic": str(bool(torch.backends.cudnn.deterministic)).lower(),
        f"{PROVENANCE}cudnn_benchmark": str(bool(torch.backends.cudnn.benchmark)).lower(),
    }


@functools.cache
def _static_provenance() -> dict[str, str]:
    import importlib.metadata
    import platform

    tags = {}
    for package in PROVENANCE_PACKAGES:
        try:
            version = torch.__version__ if package == "torch" else importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            version = "not installed"
        tags[f"{PROVENANCE}{package}"] = str(version)
    tags[f"{PROVENANCE}python"] = f"{platform.python_implementation()} {platform.python_version()}"
    tags[f"{PROVENANCE}os"] = platform.platform()
    tags[f"{PROVENANCE}cpu"] = _cpu_model()
    try:
        tags[f"{PROVENANCE}cpu_count"] = str(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        tags[f"{PROVENANCE}cpu_count"] = str(os.cpu_count())
    tags.update({f"{PROVENANCE}{k}": v for k, v in _git_source().items()})
    return tags


def _cpu_model() -> str:
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _git_source() -> dict[str, str]:
    """``git_commit`` and ``git_dirty`` (tracked files changed) of the work tree the package runs from, if any."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return {}
    try:
        # --no-optional-locks: never take the index lock (a concurrent git command of the user must not fail)
        git = ["git", "--no-optional-locks", "-C", str(root)]
        commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        status = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {}
    if commit.returncode != 0 or status.returncode != 0:
        return {}
    return {"git_commit": commit.stdout.strip(), "git_dirty": str(bool(status.stdout.strip())).lower()}


@functools.cache
def _device_description(device: str) -> str:
    if not device.startswith("cuda"):
        return device
    props = torch.cuda.get_device_properties(torch.device(device))
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return f"{device} ({props.name}, CUDA {torch.version.cuda}, cuDNN {cudnn})"


@contextlib.contextmanager
def run(name: str, tags: dict[str, str] | None = None, nested: bool = False) -> Iterator[Run]:
    """Start (or, for the outermost run inside ``mlflow run``, resume) a run.

    How it ends says why: an interrupt (Ctrl-C, or SIGTERM turned into one by the CLI) ends it KILLED, any other
    exception FAILED, both with the one-line reason as tag ``error`` (bad input, divergence, a crash).

    Every run carries the `provenance` tags (package versions, Python, CPU, threads, device, determinism flags, OS).
    """
    tags = {**provenance(), **(tags or {})}
    with mlflow.start_run(run_name=name, nested=nested, tags=tags) as r:
        mlflow.set_tags(tags)  # a resumed run (the outermost one inside ``mlflow run``) gets them too
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
    model: nn.Module, spec: ModelSpec, role: str, tags: dict[str, str], input_example: torch.Tensor,
    name: str = "model", params: dict[str, Any] | None = None, metrics: dict[str, float] | None = None,
    description: str | None = None, tokenizer: Any = None,
) -> ModelVersion:
    """Log ``model`` to the active run and register it as ``unlearn_search.<role>`` with ``tags``.

    ``name`` is the logged model's name (what the run's and the version's pages show), ``params`` and ``metrics``
    are the logged model's own (the version's page lists them), ``description`` the version's Markdown description.

    Two forms are stored: the MLflow PyTorch model, in MLflow's ``pt2`` format (a ``torch.export`` graph:
    ``mlflow.pytorch.load_model`` works without unlearn_search installed and unpickles no code; its signature comes
    from ``input_example``) and, as run artifacts under ``weights/``,
    the weights-only state dict and the `ModelSpec`, which `load_weights` turns back into a trainable module
    without unpickling code.
    """
    registered = registered_name(role)
    info = _log_model_files(model, spec, input_example, tags, registered_model_name=registered, name=name,
                            params=params, tokenizer=tokenizer)
    if metrics:
        clean = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        mlflow.log_metrics(clean, model_id=info.model_id)
    client = MlflowClient()
    if description:
        client.update_model_version(registered, str(info.registered_model_version), description=description)
    return client.get_model_version(registered, str(info.registered_model_version))


def log_model_unregistered(model: nn.Module, spec: ModelSpec, tags: dict[str, str], input_example: torch.Tensor,
                           name: str = "model", metrics: dict[str, float] | None = None,
                           tokenizer: Any = None) -> str:
    """`log_model` without the registration: returns the logged model's URI, for `register` once everything that
    the versions need has been written (a scenario registers its two references only when both are logged)."""
    info = _log_model_files(model, spec, input_example, tags, name=name, tokenizer=tokenizer)
    if metrics:
        clean = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        mlflow.log_metrics(clean, model_id=info.model_id)
    return str(info.model_uri)


def register(model_uri: str, role: str, tags: dict[str, str], description: str | None = None) -> ModelVersion:
    """Register a model logged by `log_model_unregistered` as ``unlearn_search.<role>`` with ``tags`` (and the
    version's Markdown ``description``)."""
    mv = mlflow.register_model(model_uri, registered_name(role), await_registration_for=0,
                               tags={k: str(v) for k, v in tags.items()})
    client = MlflowClient()
    if description:
        client.update_model_version(mv.name, str(mv.version), description=description)
    return client.get_model_version(mv.name, str(mv.version))


def _log_model_files(model: nn.Module, spec: ModelSpec, input_example: torch.Tensor, tags: dict[str, str],
                     registered_model_name: str | None = None, name: str = "model",
                     params: dict[str, Any] | None = None, tokenizer: Any = None) -> Any:
    from .models.text import TextClassifier

    model = model.cpu().eval()
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(model.state_dict(), Path(tmp) / "state_dict.pt")
        (Path(tmp) / "spec.json").write_text(json.dumps(spec.to_dict()))
        mlflow.log_artifacts(tmp, artifact_path="weights")
    if isinstance(model, TextClassifier):
        return _log_text_model(model, tokenizer, tags, registered_model_name, name, params)
    # The tags go in with the registration (one store call; MLflow also puts them on the logged model) instead of
    # one set_model_version_tag call each: about 0.2 s less per reference model (20-odd tags) on SQLite.
    return mlflow.pytorch.log_model(
        model,
        name=name,
        registered_model_name=registered_model_name,
        params={k: str(v) for k, v in (params or {}).items()} or None,
        pip_requirements=_pip_requirements(),
        serialization_format="pt2",
        input_example=input_example.cpu().numpy(),
        await_registration_for=0,
        tags={k: str(v) for k, v in tags.items()},
    )


def _log_text_model(model: Any, tokenizer: Any, tags: dict[str, str], registered_model_name: str | None, name: str,
                    params: dict[str, Any] | None) -> Any:
    """A language model as MLflow's ``transformers`` flavour: the ``transformers`` model inside the
    `models.text.TextClassifier` with its tokenizer, as a ``text-classification`` pipeline that loads back with
    ``transformers`` alone (``mlflow.transformers.load_model`` or ``mlflow.pyfunc.load_model``, texts in, labels
    out). On clean texts it gives the classifier's logits (tested); the Gaussian poisoning's embedding noise is
    a property of the training rows, not of the model, and is not part of it."""
    import transformers

    tok = tokenizer.tok
    if not isinstance(tok, transformers.PreTrainedTokenizerBase):  # a `models.text.WordTokenizer`
        tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")
    elif tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return mlflow.transformers.log_model(
        transformers_model={"model": model.hf, "tokenizer": tok},
        task="text-classification",
        name=name,
        registered_model_name=registered_model_name,
        params={k: str(v) for k, v in (params or {}).items()} or None,
        pip_requirements=[*_pip_requirements(), f"transformers=={transformers.__version__}"],
        await_registration_for=0,
        tags={k: str(v) for k, v in tags.items()},
    )


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


def tracking_uri() -> str:
    return str(mlflow.get_tracking_uri())


def run_metrics(run_id: str) -> dict[str, float]:
    return dict(MlflowClient().get_run(run_id).data.metrics)


def active_run_id() -> str:
    return _active().info.run_id


def active_experiment_id() -> str:
    return str(_active().info.experiment_id)


def experiment_name() -> str:
    return str(MlflowClient().get_experiment(active_experiment_id()).name)


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


#: The interactive figures of each run, by run id, until `log_dashboard` writes them into one HTML page.
_DASHBOARDS: dict[str, list[tuple[str, Any]]] = {}


def log_figures(name: str, figures: tuple[Any, Any]) -> None:
    """Log a (matplotlib, plotly) pair: the PNG as ``plots/<name>.png`` now; the interactive figure is kept for the
    run's `log_dashboard` (one offline page per run instead of one multi-megabyte file per figure)."""
    import matplotlib.pyplot as plt

    mpl, ply = figures
    mlflow.log_figure(mpl, f"plots/{name}.png")
    plt.close(mpl)
    _DASHBOARDS.setdefault(active_run_id(), []).append((name, ply))


def log_dashboard(title: str) -> None:
    """Write the active run's interactive figures (from `log_figures`) as ``plots/dashboard.html``: one page that
    embeds plotly.js once (about 5 MB) and needs no network, so it opens offline from MLflow's artifact view."""
    figures = _DASHBOARDS.pop(active_run_id(), [])
    if figures:
        log_text(dashboard_html(title, figures), "plots/dashboard.html")


def forget_dashboard() -> None:
    """Drop the active run's interactive figures without writing them (runs that keep PNGs only)."""
    _DASHBOARDS.pop(active_run_id(), None)


def dashboard_html(title: str, figures: list[tuple[str, Any]]) -> str:
    """A self-contained HTML page holding ``figures`` (name, plotly figure), plotly.js inlined once."""
    import html

    parts = [f.to_html(full_html=False, include_plotlyjs=(i == 0), div_id=f"fig-{name}")
             for i, (name, f) in enumerate(figures)]
    links = " · ".join(f'<a href="#fig-{name}">{html.escape(name)}</a>' for name, _ in figures)
    body = "\n".join(f"<section><h2>{html.escape(name)}</h2>{part}</section>"
                      for (name, _), part in zip(figures, parts, strict=True))
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;margin:2em}h2{font-size:1.1em}</style></head>"
            f"<body><h1>{html.escape(title)}</h1><p>{links}</p>{body}</body></html>")


def reference_tags(versions: dict[str, VersionRef]) -> dict[str, str]:
    """Tags that link an unlearned model to the references it was judged against: ``source_model`` (the poisoned
    version it started from) and ``retrain_model``, each ``<registered name>/<version>``."""
    return {"source_model": str(versions["poisoned"]), "retrain_model": str(versions["retrain"])}


def set_alias(role: str, alias: str, version: str) -> None:
    MlflowClient().set_registered_model_alias(registered_name(role), alias, version)


def scenario_alias(scenario_hash: str) -> str:
    """The alias of a scenario's tuned best (``best-<hash[:8]>``): set by `tune` on the best trial's version of the
    scenario's default study (every poison told, one objective), and what `analyze`, U-LiRA and compare's LiRA
    judge. A hand ``unlearn`` run, a discovery sweep or another scenario (seed, preset) never moves it."""
    return f"best-{scenario_hash[:8]}"


def version_by_alias(role: str, alias: str) -> ModelVersion | None:
    """The version ``alias`` points at, or None (no such model or alias)."""
    try:
        return MlflowClient().get_model_version_by_alias(registered_name(role), alias)
    except mlflow.exceptions.MlflowException:
        return None


#: Suffix of the experiment that holds an experiment's tune trials (see `trials_experiment_id`).
TRIALS_SUFFIX = " trials"
#: The tag that says what a run is: ``compare``, ``row`` (one line of a comparison), ``tune``, ``trial``, ...
KIND = "kind"
#: The tag MLflow renders as a run's description (Markdown) on its Overview page.
DESCRIPTION = "mlflow.note.content"


def trials_experiment_id(experiment_id: str | None = None) -> str:
    """The experiment holding the tune trials of ``experiment_id`` (default: the active run's): its name plus
    `TRIALS_SUFFIX`, created on first use. Trials live apart so that the hundreds of them a comparison makes do not
    page the comparison itself out of the main experiment's runs view; each trial run names its tune run in the tag
    ``tune_run`` (an MLflow parent link cannot cross experiments)."""
    client = MlflowClient()
    if experiment_id is None:
        experiment_id = _active().info.experiment_id
    name = client.get_experiment(experiment_id).name + TRIALS_SUFFIX

    def get_or_create() -> str:
        found = client.get_experiment_by_name(name)
        return str(found.experiment_id) if found is not None else str(client.create_experiment(name))

    return str(_retry_races(get_or_create))


def _active() -> Run:
    r = mlflow.active_run()
    if r is None:
        raise RuntimeError("no active MLflow run")
    return r


def set_description(markdown: str) -> None:
    """The active run's description, which MLflow's UI renders as Markdown on the run's Overview page."""
    mlflow.set_tag(DESCRIPTION, markdown)


def run_url(run_id: str | None = None) -> str:
    """Where a run opens in MLflow's UI (its classic Overview page): under the tracking server's own address when
    the tracking URI is one, else under ``mlflow ui``'s default address (http://127.0.0.1:5000)."""
    run = _active() if run_id is None else MlflowClient().get_run(run_id)
    uri = mlflow.get_tracking_uri()
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return (f"{redact_uri(base)}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
            "?workflowType=machine_learning")


def serve_hint() -> str:
    """How to serve the results for `run_url`'s address when the tracking store is not a server: the ``mlflow ui``
    command for this store (empty for a tracking server)."""
    uri = mlflow.get_tracking_uri()
    if uri.startswith(("http://", "https://", "databricks")):
        return ""
    return f" (serve them first: mlflow ui --backend-store-uri {redact_uri(uri)})"


def experiment_url(experiment_id: str) -> str:
    """The experiment's classic runs view (``mlflow ui`` otherwise opens on the GenAI overview)."""
    uri = mlflow.get_tracking_uri()
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return f"{redact_uri(base)}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


class ChildRunWriter:
    """Writes finished child runs of the active run from a separate process (`runwriter`).

    Used per tune trial: each child run is three store calls made while the next trial already computes, in another
    process so that MLflow's Python does not compete with the trial for the interpreter. `flush` waits for what was
    submitted; `close` also re-raises the first error, so nothing is silently lost. If the writer process is gone
    (killed from outside), the runs it had not written are written here, in this process. The process is started
    with ``spawn``, which re-imports the ``__main__`` module: a script of the user's that runs a study must guard
    its entry with ``if __name__ == "__main__":``, as Python's multiprocessing requires (``python -m unlearn_search``,
    ``mlflow run``, notebooks and pytest need nothing).

    ``experiment_id``: write the runs into another experiment (the trials experiment), linked to the active run by
    the tag ``link_tag`` instead of MLflow's parent link (which the UI does not follow across experiments).
    """

    def __init__(self, experiment_id: str | None = None, link_tag: str = "tune_run") -> None:
        from concurrent.futures import Future

        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        parent = _active()
        self.parent_id = parent.info.run_id
        self.experiment_id = experiment_id or parent.info.experiment_id
        self.link = {MLFLOW_PARENT_RUN_ID if experiment_id in (None, parent.info.experiment_id) else link_tag:
                     self.parent_id}
        self.provenance = provenance()
        self.jobs: list[tuple[Future[str], tuple[Any, ...]]] = []

    @property
    def pool(self) -> Any:  # the shared writer process pool (None before the first write)
        return _WRITER[0]

    def submit(self, name: str, start_ms: int, params: dict[str, Any], metrics: dict[str, float],
               tags: dict[str, str], failed: bool = False, end_ms: int | None = None) -> None:
        """Queue a finished child run; its end time is ``end_ms`` (default: now, when the work it records ended),
        not the later moment the writer process writes it."""
        from concurrent.futures.process import BrokenProcessPool

        from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

        from . import runwriter

        end_ms = int(time.time() * 1000) if end_ms is None else end_ms
        all_tags = {**self.provenance, **{k: str(v) for k, v in tags.items()}, **self.link, MLFLOW_RUN_NAME: name}
        args = (mlflow.get_tracking_uri(), self.experiment_id, all_tags, name, start_ms, end_ms, dict(params),
                dict(metrics), failed)
        for _ in range(2):
            try:
                self.jobs.append((_writer_pool().submit(runwriter.write, *args), args))
                return
            except BrokenProcessPool:  # the writer process died: its lost runs are rewritten by `flush`
                _WRITER[0] = None
        raise RuntimeError("the MLflow writer process cannot be started")

    def flush(self) -> None:
        """Wait until every child run submitted so far is written (here, for those the writer process lost)."""
        from concurrent.futures import wait
        from concurrent.futures.process import BrokenProcessPool

        from . import runwriter

        wait([f for f, _ in self.jobs])
        for i, (f, args) in enumerate(self.jobs):
            if isinstance(f.exception(), BrokenProcessPool):
                from concurrent.futures import Future

                done: Future[str] = Future()
                try:
                    done.set_result(runwriter.write(*args))
                except Exception as e:  # kept for `close` to re-raise
                    done.set_exception(e)
                self.jobs[i] = (done, args)

    def close(self) -> None:
        self.flush()
        for f, _ in self.jobs:
            f.result()  # re-raise a failed write


#: The writer process, one per tuning process, shared by its studies (a comparison runs dozens: starting a process
#: and importing MLflow for each cost about 1.5 s per study); started on the first run to write.
_WRITER: list[Any] = [None]


def _writer_pool() -> Any:
    import atexit
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from . import runwriter

    if _WRITER[0] is None:
        # spawn, not fork: a forked copy of a process running torch's thread pools can deadlock
        pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=runwriter.init)
        atexit.register(pool.shutdown, wait=True)
        _WRITER[0] = pool
    return _WRITER[0]


def log_finished_run(name: str, tags: dict[str, str], metrics: dict[str, float], link_tag: str,
                     description: str = "") -> str:
    """A finished run beside the active run: top level in the same experiment (so that MLflow's runs table and
    charts show it without expanding anything), linked to the active run by the tag ``link_tag`` and, with a
    ``description`` (its Overview text), by a link to the active run's page, with `provenance` tags. Written here,
    synchronously, by the same code as the writer process's runs. Returns its id."""
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

    from . import runwriter

    active = _active()
    now = int(time.time() * 1000)
    all_tags = {**provenance(), **{k: str(v) for k, v in tags.items()}, link_tag: active.info.run_id,
                MLFLOW_RUN_NAME: name}
    if description:
        page = f"#/experiments/{active.info.experiment_id}/runs/{active.info.run_id}"
        all_tags[DESCRIPTION] = f"{description}\n\n[The run this row belongs to ({active.info.run_name})]({page})"
    return runwriter.write(mlflow.get_tracking_uri(), active.info.experiment_id, all_tags, name, now, now, {},
                           metrics, False)


def search_runs(filter_string: str, experiment_ids: list[str] | None = None) -> list[Run]:
    """Every run of ``experiment_ids`` (default: the active run's experiment) matching ``filter_string`` (all
    pages)."""
    client = MlflowClient()
    ids = experiment_ids or [_active().info.experiment_id]
    out: list[Run] = []
    token = None
    while True:
        page = client.search_runs(ids, filter_string, max_results=1000, page_token=token)
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


def delete_tag(key: str) -> None:
    """Remove tag ``key`` from the active run (if set)."""
    with contextlib.suppress(mlflow.exceptions.MlflowException):
        MlflowClient().delete_tag(active_run_id(), key)
