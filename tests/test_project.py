"""The project's shape: MLproject entry points agree with the CLI and the registries; README and CI agree."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from unlearn_search import cli

ROOT = Path(__file__).resolve().parents[1]


def _mlproject() -> dict:
    return yaml.safe_load((ROOT / "MLproject").read_text())


def _cli_defaults(command: str) -> dict[str, object]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]  # type: ignore[union-attr]
    return {a.dest: a.default for a in sub._actions if a.dest not in ("help", "experiment")}


def test_poison_entry_point_matches_the_cli():
    mlp = _mlproject()
    for entry in ("main", "poison"):
        ep = mlp["entry_points"][entry]
        defaults = _cli_defaults("poison")
        assert set(ep["parameters"]) == set(defaults), entry
        for name, spec in ep["parameters"].items():
            assert str(spec["default"]) == str(defaults[name]), (entry, name)
            assert f"--{name.replace('_', '-')} {{{name}}}" in ep["command"], (entry, name)


def test_readme_runs_the_same_test_command_as_ci():
    ci = (ROOT / ".ci" / "run").read_text()
    command = re.search(r"^TEST_COMMAND='(.+)'$", ci, re.M)
    assert command is not None
    assert command.group(1) in (ROOT / "README.md").read_text()


def test_conda_env_lists_the_package_dependencies():
    conda = yaml.safe_load((ROOT / "conda.yaml").read_text())
    pip_deps = next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict))
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert sorted(pip_deps) == sorted(deps)
