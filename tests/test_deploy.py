"""The deploy recipes (deploy/), checked as far as a machine without a Docker engine or a cluster allows: they parse,
copy only files that exist, run only entry points and parameters that exist, take passwords from the environment,
and MLflow's own Kubernetes backend accepts its config and fills its job template."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"


def _entry_points() -> dict:
    return yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]


def _check_mlflow_run(argv: list[str]) -> None:
    """An ``mlflow run <project> -e <entry point> -P k=v ...`` command line names an entry point that exists and
    only parameters it has; its storage takes the password from the environment."""
    assert argv[:2] == ["mlflow", "run"], argv
    entry = argv[argv.index("-e") + 1]
    eps = _entry_points()
    assert entry in eps, entry
    params = [argv[i + 1] for i, a in enumerate(argv) if a == "-P"]
    assert params
    for p in params:
        key, _, value = p.partition("=")
        assert key in eps[entry]["parameters"], (entry, key)
        if key == "storage":
            assert re.search(r"\$\{?\$?\{?PGPASSWORD\}", value) and ":" in value, value  # from the environment
    assert "method" in {p.partition("=")[0] for p in params}


def _check_kubernetes_object(doc: dict, kind: str) -> None:
    """``doc`` is a valid Kubernetes ``kind`` as far as the API's client models tell without a cluster: every
    required field present and every field known (a misspelled one, e.g. ``completionmode``, is dropped by the
    models, so the round trip would differ)."""
    from kubernetes.client import ApiClient

    class Response:  # what ApiClient.deserialize reads
        data = json.dumps(doc)

    api = ApiClient()
    back = api.sanitize_for_serialization(api.deserialize(Response(), kind))

    def plain(d: object) -> object:  # quantities such as `nvidia.com/gpu: 1` come back as strings
        return json.loads(json.dumps(d), parse_int=str, parse_float=str)

    assert plain(back) == plain(doc)


def test_dockerfile_copies_only_what_exists_and_installs_existing_extras():
    text = (DEPLOY / "Dockerfile").read_text()
    copies = re.findall(r"^COPY (.+)$", text, re.M)
    assert copies
    for line in copies:
        *sources, _ = line.split()
        for source in sources:
            assert (ROOT / source).exists(), source
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (installed,) = re.findall(r'pip install [^"]*"\.\[([a-z,]+)\]"', text)
    assert set(installed.split(",")) <= set(extras)
    entry = json.loads(re.search(r"^ENTRYPOINT (.+)$", text, re.M).group(1))  # type: ignore[union-attr]
    assert entry == ["python", "-m", "unlearn_search"]
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and "mlruns" in ignored


def test_compose_file_runs_the_services_and_workers_of_existing_entry_points():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "mlflow", "setup", "worker"} <= set(services)
    worker = services["worker"]
    _check_mlflow_run([a.replace("$$", "$") for a in worker["entrypoint"]])  # $$: compose's escape for a literal $
    assert worker["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert "replicas" in worker["deploy"]
    assert worker["depends_on"]["setup"]["condition"] == "service_completed_successfully"
    server = " ".join(services["mlflow"]["command"])
    assert "mlflow server" in server and "--serve-artifacts" in server and "postgresql://" in server
    # MLflow's server answers only the Host names it allows (by default localhost and private IP addresses)
    (allowed,) = re.findall(r'--allowed-hosts "?([^"\s]+)', server)
    for name in ("setup", "worker"):
        assert urlsplit(services[name]["environment"]["MLFLOW_TRACKING_URI"]).netloc in allowed.split(","), name
    assert (DEPLOY / "initdb" / "mlflow.sql").exists()
    text = (DEPLOY / "docker-compose.yaml").read_text()
    assert not re.search(r"postgresql://\w+:(?!\$)[^@\s]+@", text), "a literal password"
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD")


def test_compose_setup_creates_the_experiment_and_fetches_the_dataset_once_for_the_workers(mlflow_store,
                                                                                             monkeypatch):
    from mlflow.tracking import MlflowClient

    setup = yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())["services"]["setup"]
    assert setup["entrypoint"] == ["python", "-c"]
    assert "data:/data" in setup["volumes"]  # the workers' data volume
    monkeypatch.setenv("PRESET", "default")  # the embedded dataset: nothing downloaded here
    (code,) = setup["command"]
    for _ in range(2):  # a second `up` finds the experiment
        exec(compile(code, "setup", "exec"), {})
    assert MlflowClient().get_experiment_by_name("unlearn_search") is not None


def test_kubernetes_indexed_job_runs_tune_workers_with_the_password_from_a_secret():
    job = yaml.safe_load((DEPLOY / "k8s" / "tune-job.yaml").read_text())
    _check_kubernetes_object(job, "V1Job")
    assert job["kind"] == "Job" and job["apiVersion"] == "batch/v1"
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["parallelism"] >= 1
    (container,) = job["spec"]["template"]["spec"]["containers"]
    _check_mlflow_run(container["command"])
    env = {e["name"]: e for e in container["env"]}
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "password"
    assert env["MLFLOW_TRACKING_URI"]["value"].startswith("http://")


def test_mlflow_kubernetes_backend_accepts_the_config_and_fills_the_template(monkeypatch):
    from mlflow.projects import _parse_kubernetes_config
    from mlflow.projects.kubernetes import _get_kubernetes_job_definition

    monkeypatch.chdir(ROOT)  # the config names the template relative to the repository root, as users run it
    config = _parse_kubernetes_config(json.loads((DEPLOY / "k8s" / "kubernetes_config.json").read_text()))
    job = _get_kubernetes_job_definition("unlearn-search", "registry.example.com/unlearn-search", "sha256:0",
                                         shlex.split("python -m unlearn_search tune --method=gd"),
                                         {"MLFLOW_RUN_ID": "r"}, config["kube-job-template"])
    (container,) = job["spec"]["template"]["spec"]["containers"]
    password, *appended = container["env"]
    assert appended == [{"name": "MLFLOW_RUN_ID", "value": "r"}]  # no placeholder left beside what MLflow appended
    assert password["name"] == "PGPASSWORD" and password["valueFrom"]["secretKeyRef"]["key"] == "password"
    assert "replaced with" not in json.dumps(job)
    _check_kubernetes_object(job, "V1Job")


def test_the_kubernetes_backend_command_of_the_readme_reaches_tune_intact():
    """MLflow's Kubernetes backend re-quotes each argument and runs it without a shell: the README's ``-P`` values
    must come through as tune reads them (the storage without a password: libpq reads PGPASSWORD)."""
    from mlflow.projects import _project_spec
    from mlflow.projects.kubernetes import _get_run_command
    from mlflow.projects.utils import get_entry_point_command

    from unlearn_search.cli import build_parser

    readme = (DEPLOY / "README.md").read_text()
    (line,) = re.findall(r"mlflow run deploy/k8s/project --backend kubernetes[^`]*?(?=\n\n)", readme, re.S)
    argv = shlex.split(line.replace("\\\n", " "))
    assert argv[argv.index("--backend-config") + 1] == "deploy/k8s/kubernetes_config.json"
    entry = argv[argv.index("-e") + 1]
    params = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "-P")
    project = _project_spec.load_project(str(DEPLOY / "k8s" / "project"))
    command = _get_run_command(get_entry_point_command(project, entry, params, None))
    assert command[:3] == ["python", "-m", "unlearn_search"]
    args = build_parser(command[3:]).parse_args(command[3:])
    assert args.command == entry and args.method == params["method"] and args.storage == params["storage"]
    assert "@" in params["storage"] and not re.search(r"://[^/@]*:[^/@]*@", params["storage"])  # no password


def test_the_kubernetes_backend_garbles_a_value_that_needs_quoting():
    """Why the README passes the storage without ``${PGPASSWORD}``: MLflow's backend hands it over with literal
    quotes. (Should this fail, MLflow passes such values intact now, and the README may use ``${PGPASSWORD}``.)"""
    from mlflow.projects import _project_spec
    from mlflow.projects.kubernetes import _get_run_command
    from mlflow.projects.utils import get_entry_point_command

    value = "postgresql://unlearn:${PGPASSWORD}@postgres/optuna"
    project = _project_spec.load_project(str(DEPLOY / "k8s" / "project"))
    command = _get_run_command(get_entry_point_command(project, "tune", {"method": "gd", "storage": value}, None))
    assert f"--storage={value}" not in command and f"'--storage={value}'" in command
