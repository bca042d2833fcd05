"""Third-party methods as plugins (issue 17): the plugin of docs/plugins.md, installed with pip into a fresh folder,
runs through `tune` and `unlearn` like a built-in method and passes the public conformance checks; a plugin that
fails to import is named in one line and the built-in methods still work; an unknown method lists both kinds.

Each test runs the tool in a subprocess with that folder on PYTHONPATH, so nothing is installed into the test
environment itself (and `MLproject`, generated from the built-in methods, is untouched by the plugin)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _files_of_the_docs_page() -> dict[str, str]:
    """The fenced code blocks of docs/plugins.md whose first line names a file (``# pyproject.toml``)."""
    text = (ROOT / "docs" / "plugins.md").read_text()
    out = {}
    for body in re.findall(r"```(?:toml|python)\n(.*?)```", text, flags=re.S):
        first, _, rest = body.partition("\n")
        if first.startswith("# ") and "." in first and " " not in first[2:]:
            out[first[2:]] = rest
    return out


def _install(tmp: Path, name: str, files: dict[str, str]) -> Path:
    """``pip install --target`` of a package made of ``files`` (no network, no build isolation)."""
    src, site = tmp / f"{name}-src", tmp / "site"
    src.mkdir()
    for fname, body in files.items():
        (src / fname).write_text(body)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--no-build-isolation",
                    "--target", str(site), str(src)], check=True, capture_output=True, text=True, timeout=300)
    return site


def _run(args: list[str], site: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site), "MLFLOW_TRACKING_URI": f"sqlite:///{cwd}/mlflow.db"}
    env.pop("MLFLOW_RUN_ID", None)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):  # type: ignore[no-untyped-def]
    files = _files_of_the_docs_page()
    assert set(files) == {"pyproject.toml", "shrink_method.py"}
    assert sum(len(b.splitlines()) for b in files.values()) < 60, "the docs promise a plugin in under 60 lines"
    return _install(tmp_path_factory.mktemp("plugin"), "shrink", files)


def test_the_docs_plugin_passes_the_public_conformance_checks(plugin_site, tmp_path) -> None:  # type: ignore[no-untyped-def]
    r = _run(["-c", "from unlearn_search.conformance import check_method; from unlearn_search.methods import "
                    "METHODS; check_method('shrink'); m = METHODS.get('shrink'); print(m.package, m.builtin)"],
             plugin_site, tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["shrink_method", "False"]


@pytest.mark.slow
def test_the_docs_plugin_runs_through_tune_and_unlearn(plugin_site, tmp_path) -> None:  # type: ignore[no-untyped-def]
    small = ["--train-epochs", "5"]
    r = _run(["-m", "unlearn_search", "tune", "--method", "shrink", "--n-trials", "3", *small], plugin_site, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Best case: trial" in r.stdout
    r = _run(["-m", "unlearn_search", "unlearn", "--method", "shrink", "--factor", "0.3", "--batch_size", "32",
              "--register", "false", *small], plugin_site, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "removal" in r.stdout
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    try:
        runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                  filter_string="tags.entry_point = 'unlearn'")
        params = runs[0].data.params
        assert params["method.factor"] == "0.3" and params["method.batch_size"] == "32"
        versions = mlflow.MlflowClient().search_model_versions("name = 'unlearn_search.unlearned.shrink'")
        assert len(versions) == 1  # tune registered its best model, like a built-in method's
    finally:
        mlflow.set_tracking_uri(None)


def test_a_broken_plugin_is_named_in_one_line_and_the_rest_work(plugin_site, tmp_path) -> None:  # type: ignore[no-untyped-def]
    toml = _files_of_the_docs_page()["pyproject.toml"]
    for old, new in (("unlearn-search-shrink", "unlearn-search-broken"), ('shrink = "shrink_method"',
                     'broken = "broken_method"'), ('["shrink_method"]', '["broken_method"]')):
        toml = toml.replace(old, new)
    broken = {"pyproject.toml": toml, "broken_method.py": "import a_module_that_does_not_exist\n"}
    site = _install(tmp_path, "broken", broken)
    for path in plugin_site.iterdir():  # the working plugin beside it
        target = site / path.name
        if not target.exists():
            target.symlink_to(path)
    r = _run(["-m", "unlearn_search", "tune", "--method", "nope"], site, tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert lines[0] == ("unlearn_search: plugin 'broken' (broken_method) failed to load and is left out: "
                        "ModuleNotFoundError: No module named 'a_module_that_does_not_exist'")
    assert len(lines) == 2, r.stderr  # that line, then the usage error
    assert "unknown method 'nope'; valid: bad_teacher, cf_k," in lines[1]
    assert "; plugins: shrink (plugin shrink_method)" in lines[1]
    r = _run(["-c", "from unlearn_search.methods import METHODS; print(len(METHODS.names()))"], site, tmp_path)
    assert r.returncode == 0 and int(r.stdout) == 15  # the 14 built-in methods and the working plugin
