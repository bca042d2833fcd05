"""The documentation stays true: links resolve, every entry point, method and attack is documented, every flag
the docs mention exists, and the README stays short enough to read in five minutes."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Flags of other tools the docs show in commands (mlflow's).
OTHER_TOOLS = {"--backend-store-uri", "--env-manager", "--experiment-name", "--host", "--port", "--serve-artifacts",
               "--artifacts-destination", "--allowed-hosts", "--key"}  # --key: the placeholder in "--key value"


def _text(page: Path) -> str:
    return page.read_text()


def test_every_relative_link_resolves():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s#]+)(?:#[^)]*)?\)", _text(page)):
            if re.match(r"^[a-z]+://", target):
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to missing {target}"


def test_every_docs_page_is_in_the_index():
    index = _text(ROOT / "docs" / "README.md")
    for page in (ROOT / "docs").glob("*.md"):
        if page.name != "README.md":
            assert f"]({page.name})" in index, page.name


def test_every_entry_point_is_documented():
    eps = yaml.safe_load(_text(ROOT / "MLproject"))["entry_points"]
    from unlearn_search.methods import METHODS

    doc = _text(ROOT / "docs" / "entry_points.md") + _text(ROOT / "docs" / "methods.md")
    for name in eps:
        assert f"`{name}`" in doc or f"-e {name}" in doc, name
    methods = _text(ROOT / "docs" / "methods.md")
    for name in METHODS.names():
        assert re.search(rf"`{name}`|\b{name}\b", methods), name


def test_every_attack_is_documented():
    from unlearn_search.attacks import ATTACKS

    doc = _text(ROOT / "docs" / "attacks.md")
    for name in ATTACKS.names():
        assert f"`{name}`" in doc or name in doc, name


def _cli_flags() -> set[str]:
    from dataclasses import fields

    from unlearn_search.cli import build_parser
    from unlearn_search.methods import METHODS

    flags: set[str] = set()

    def walk(parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:
            flags.update(o for o in action.option_strings if o.startswith("--"))
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)

    walk(build_parser([]))
    for name in METHODS.names():  # `unlearn --method <name>` adds the method's own options
        flags.update(f"--{f.name.replace('_', '-')}" for f in fields(METHODS.get(name).Config))
    for script in (ROOT / "benchmarks").glob("*.py"):  # the benchmarks the docs run
        flags.update(re.findall(r"add_argument\(\"(--[a-z0-9-]+)\"", script.read_text()))
    return flags


def test_every_flag_the_docs_mention_exists():
    known = _cli_flags() | OTHER_TOOLS
    for page in PAGES:
        for flag in set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]+", _text(page))):
            assert flag in known, f"{page.relative_to(ROOT)} mentions {flag}, which no command has"


def test_readme_is_short():
    assert len(_text(ROOT / "README.md")) < 10_000


def test_the_methods_table_has_every_method_with_its_defaults():
    from dataclasses import fields

    from unlearn_search.methods import METHODS

    doc = _text(ROOT / "docs" / "methods.md")
    for name in METHODS.names():
        m = METHODS.get(name)
        row = (f"| `{name}` | {m.summary.strip().splitlines()[0]} | "
               + ", ".join(f"{f.name}={f.default}" for f in fields(m.Config)) + " |")
        assert row in doc, f"docs/methods.md: the row of {name} is not {row}"
