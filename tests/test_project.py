"""The project's shape: MLproject entry points agree with the CLI and the registries; README and CI agree."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _mlproject() -> dict:
    return yaml.safe_load((ROOT / "MLproject").read_text())


def test_mlproject_is_rendered_from_the_cli_and_registries():
    from unlearn_search.project import render

    assert (ROOT / "MLproject").read_text() == render(), "run: python -m unlearn_search.project > MLproject"


def test_entry_points_are_the_registered_methods_plus_main_and_poison():
    """One per built-in method (an installed plugin does not change the file: it runs through `unlearn`)."""
    from unlearn_search.methods import METHODS

    builtin = [n for n in METHODS.names() if METHODS.get(n).builtin]
    assert set(_mlproject()["entry_points"]) == {"main", "compare", "poison", "tune", "analyze", "plan", "unlearn",
                                                 *builtin}


def test_method_entry_points_carry_every_config_field_with_its_default():
    from dataclasses import fields

    from unlearn_search.cli import format_default
    from unlearn_search.methods import METHODS

    eps = _mlproject()["entry_points"]
    for name in (n for n in METHODS.names() if METHODS.get(n).builtin):
        params = eps[name]["parameters"]
        assert f"--method {name} " in eps[name]["command"]
        for f in fields(METHODS.get(name).Config):
            assert str(params[f.name]["default"]) == format_default(f.default), (name, f.name)
            assert f"--{f.name.replace('_', '-')}={{{f.name}}}" in eps[name]["command"]


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


def test_readme_table_is_the_one_the_tool_wrote():
    """The README shows the short form of the main job's table (the comparison's Overview): each of its rows is the
    tool's full table (docs/comparison_digits_3seeds.md) cut to the short form's columns, cell for cell."""
    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")]

    tool = [cells(ln) for ln in (ROOT / "docs" / "comparison_digits_3seeds.md").read_text().splitlines()
            if ln.startswith("|")]
    head, rows = tool[0], tool[2:]
    short = ["method", "removal", "test acc", "GUS z", "MIA TPR@1%FPR", "poison removed", "search"]
    readme = [cells(ln) for ln in (ROOT / "README.md").read_text().splitlines() if ln.startswith("|")]
    assert short in readme
    for row in rows:
        want = [row[head.index(col)] for col in short]
        assert want in readme, f"README.md lacks the tool's row {want}"
