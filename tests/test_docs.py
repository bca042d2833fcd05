"""The documentation stays true: links (and their #anchors) resolve, every page is reachable from the index and links
back to it, every entry point, parameter, method, attack and environment variable is documented, every flag and
`-P` parameter the docs use exists for the command it is used with, copies of the tool's table are the tool's, and
the README stays short enough to read in five minutes."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
#: Files the tool wrote, copied verbatim: no summary line or link back to the index.
TOOL_OUTPUTS = {"comparison_digits_3seeds.md", "comparison_attacks_digits_seed0.md", "comparison_llm_small_3seeds.md",
                "comparison_digits_3seeds_lira.md", "comparison_digits_3seeds_all.md", "comparison_discovery_digits.md"}
#: Flags of other tools the docs show in commands (mlflow's, optuna-dashboard's).
OTHER_TOOLS = {"--backend-store-uri", "--env-manager", "--experiment-name", "--host", "--port", "--serve-artifacts",
               "--artifacts-destination", "--allowed-hosts", "--key"}  # --key: the placeholder in "--key value"
#: Placeholders the docs use in `-P <name>=...`.
PARAM_PLACEHOLDERS = {"key"}
README_LIMIT = 8_000  # characters: about five minutes of reading
SUBCOMMANDS = ("poison", "unlearn", "tune", "compare", "plan")


def _text(page: Path) -> str:
    return page.read_text()


def _mlproject() -> dict:
    return yaml.safe_load(_text(ROOT / "MLproject"))["entry_points"]


def _code(text: str) -> list[str]:
    """Fenced blocks, one command line each, and inline code spans (which may wrap lines), whitespace collapsed."""
    out: list[str] = []
    for fence in re.findall(r"```.*?```", text, re.S):
        out += [ln.strip() for ln in fence.strip("`").splitlines()[1:] if ln.strip()]
    out += re.findall(r"`([^`]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return [" ".join(s.split()) for s in out]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", "")).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", _text(page), flags=re.S)
    return {_slug(h) for h in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", text, re.M)}


def test_every_relative_link_resolves():
    for page in PAGES:
        for target, anchor in re.findall(r"\]\(([^)\s#]*)(?:#([^)\s]*))?\)", _text(page)):
            if re.match(r"^[a-z]+://", target) or (not target and not anchor):
                continue
            path = page.parent / target if target else page
            assert path.exists(), f"{page.relative_to(ROOT)} links to missing {target}"
            if anchor and path.suffix == ".md":
                where = target or page.name
                assert anchor in _anchors(path), f"{page.relative_to(ROOT)}: no heading #{anchor} in {where}"


def test_anchor_slugs_are_githubs():
    assert _slug("Measured on this machine (2 CPU cores, no GPU)") == "measured-on-this-machine-2-cpu-cores-no-gpu"
    assert _slug("Removal and the verdict") == "removal-and-the-verdict"


def test_every_docs_page_is_in_the_index_and_the_readme_links_the_index():
    index = _text(DOCS / "README.md")
    for page in DOCS.glob("*.md"):
        if page.name != "README.md":
            assert f"]({page.name})" in index, page.name
    assert "](docs/README.md)" in _text(ROOT / "README.md")


@pytest.mark.parametrize("page", [p for p in sorted(DOCS.glob("*.md")) if p.name not in TOOL_OUTPUTS | {"README.md"}],
                         ids=lambda p: p.name)
def test_every_docs_page_starts_with_a_title_and_a_summary_linking_the_index(page):
    title, _, rest = _text(page).lstrip().partition("\n")
    summary = rest.strip().split("\n\n")[0]
    assert title.startswith("# "), f"{page.name}: first line is not a title"
    assert "](README.md)" in summary, f"{page.name}: the paragraph after the title is not a summary linking the index"
    assert len(re.findall(r"^# ", re.sub(r"```.*?```", "", _text(page), flags=re.S), re.M)) == 1, \
        f"{page.name}: more than one top-level heading"


def test_every_entry_point_is_documented():
    doc = _text(DOCS / "entry_points.md")
    for name in _mlproject():
        assert f"`{name}`" in doc, f"docs/entry_points.md does not name the entry point `{name}`"


def _tables(doc: str) -> dict[str, dict[str, str]]:
    """Per '### ' section of a page: its table rows, first cell (without backticks) -> second cell."""
    out: dict[str, dict[str, str]] = {}
    for section in re.split(r"^### ", doc, flags=re.M)[1:]:
        title, _, body = section.partition("\n")
        rows = {}
        for line in body.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if line.startswith("| `") and len(cells) >= 2:
                rows[cells[0].strip("`")] = cells[1]
        out[title.strip()] = rows
    return out


def test_every_parameter_is_documented_with_its_default():
    from unlearn_search.methods import METHODS

    tables = _tables(_text(DOCS / "entry_points.md"))
    scenario = next(rows for title, rows in tables.items() if title.startswith("Scenario parameters"))
    unlearning = next(rows for title, rows in tables.items() if title.startswith("Unlearning entry points"))
    sections = {"poison": {}, "unlearn": unlearning, "tune": tables["tune"], "compare": tables["compare and main"],
                "main": tables["compare and main"], "analyze": tables["analyze"],
                "plan": {**tables["compare and main"], **tables["plan"]}}
    for ep, spec in _mlproject().items():
        own = unlearning if ep in METHODS else sections[ep]  # a new kind of entry point needs its section here
        method_fields = set(_method_fields(ep)) if ep in METHODS else set()
        for name, p in spec["parameters"].items():
            if name in method_fields:
                continue  # the method's own options: docs/methods.md's table (test below)
            rows = own if name in own else scenario
            assert name in rows, f"docs/entry_points.md: parameter `{name}` of `{ep}` has no row"
            default = p.get("default")
            cell = rows[name]
            if default is None:
                assert "required" in cell, f"`{name}` of `{ep}` is required, the docs say {cell!r}"
            elif default == "":
                assert "empty" in cell, f"`{name}` of `{ep}` defaults to empty, the docs say {cell!r}"
            else:
                assert f"`{default}`" in cell, f"`{name}` of `{ep}` defaults to {default}, the docs say {cell!r}"


def _method_fields(name: str) -> list[str]:
    from dataclasses import fields

    from unlearn_search.methods import METHODS

    return [f.name for f in fields(METHODS.get(name).Config)]


def test_every_attack_is_in_the_attacks_table():
    from unlearn_search.attacks import ATTACKS

    doc = _text(DOCS / "attacks.md")
    for name in ATTACKS.names():
        assert re.search(rf"^\| `{name}`", doc, re.M), f"docs/attacks.md: no table row for the attack `{name}`"


def test_every_environment_variable_the_code_reads_is_documented():
    names = set()
    for module in (ROOT / "unlearn_search").rglob("*.py"):
        names |= set(re.findall(r"UNLEARN_SEARCH_[A-Z0-9_]*[A-Z0-9]", _text(module)))
    assert names, "no UNLEARN_SEARCH_* variable found in the code: the pattern is stale"
    doc = _text(DOCS / "entry_points.md")
    for name in sorted(names):
        assert f"`{name}`" in doc, f"docs/entry_points.md's environment variables lack `{name}`"


def _subparsers(argv: list[str]) -> dict[str, argparse.ArgumentParser]:
    from unlearn_search.cli import build_parser

    parser = build_parser(argv)
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in parser._actions for o in a.option_strings if o.startswith("--")}


def _cli_flags() -> set[str]:
    from unlearn_search.cli import build_parser
    from unlearn_search.methods import METHODS

    flags = _flags(build_parser([]))
    for sub in _subparsers([]).values():
        flags |= _flags(sub)
    for name in METHODS.names():  # `unlearn --method <name>` adds the method's own options
        flags |= {f"--{f.replace('_', '-')}" for f in _method_fields(name)}
    for script in (ROOT / "benchmarks").glob("*.py"):  # the benchmarks the docs run
        flags |= set(re.findall(r"add_argument\(\"(--[a-z0-9-]+)\"", _text(script)))
    return flags


def _docs_plugin_options() -> set[str]:
    """The options of the example plugin of docs/plugins.md (its config's fields): not the tool's, but real."""
    return set(re.findall(r"^    (\w+): \w+ = ", _text(DOCS / "plugins.md"), flags=re.M))


def test_every_flag_the_docs_mention_exists():
    known = _cli_flags() | OTHER_TOOLS | {f"--{o.replace('_', '-')}" for o in _docs_plugin_options()}
    for page in PAGES:
        for flag in set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]+", _text(page))):
            assert flag in known, f"{page.relative_to(ROOT)} mentions {flag}, which no command has"


def test_every_command_line_uses_its_own_subcommands_flags():
    """`python -m unlearn_search <command> --flag` and `<command> --flag` in code: the flag is that command's."""
    from unlearn_search.methods import METHODS

    checked = 0
    for page in PAGES:
        for code in _code(_text(page)):
            m = re.search(rf"(?:unlearn_search\s+|^)({'|'.join(SUBCOMMANDS)})\s+(--.*)$", code)
            if not m:
                continue
            method = re.search(r"--method[ =]([a-z_]+)", code)
            argv = [m.group(1), "--method", method.group(1)] if method and method.group(1) in METHODS else []
            known = _flags(_subparsers(argv)[m.group(1)]) | {"--help"}
            for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]+", m.group(2)):
                assert flag in known, f"{page.relative_to(ROOT)}: `{code}`: {m.group(1)} has no {flag}"
            checked += 1
    assert checked >= 3, "no command line found in the docs: the pattern is stale"


def test_every_mlflow_run_parameter_exists_for_its_entry_point():
    """`-P name=...` names a parameter of the entry point the same command runs (`-e <entry point>`), or of some
    entry point where the docs name none."""
    eps = _mlproject()
    every = set().union(*(spec["parameters"] for spec in eps.values())) | PARAM_PLACEHOLDERS | _docs_plugin_options()
    checked = 0
    for page in PAGES:
        text = _text(page)
        for name in re.findall(r"-P\s+([a-z_]+)=", text):
            assert name in every, f"{page.relative_to(ROOT)}: -P {name}=..., which no entry point has"
        for code in _code(text):
            ep = re.search(r"-e\s+([a-z_]+)", code)
            if ep and ep.group(1) in eps:
                allowed = set(eps[ep.group(1)]["parameters"])
                if ep.group(1) == "unlearn":  # passes a method's own options on, a plugin's too
                    allowed |= _docs_plugin_options()
                for name in re.findall(r"-P\s+([a-z_]+)=", code):
                    assert name in allowed, \
                        f"{page.relative_to(ROOT)}: `{code}`: entry point {ep.group(1)} has no parameter {name}"
                    checked += 1
    assert checked >= 3, "no `mlflow run -e ... -P ...` found in the docs: the pattern is stale"


def test_copies_of_the_tools_table_are_the_tools_table():
    tool = [ln for ln in _text(DOCS / "comparison_digits_3seeds.md").splitlines() if ln.startswith("|")]
    for page in PAGES:
        lines = _text(page).splitlines()
        # a copy: a page holding its first row of numbers (other tables of the tool share its header line)
        if page.name != "comparison_digits_3seeds.md" and tool[2] in lines:
            missing = [ln for ln in tool if ln not in lines]
            assert not missing, f"{page.relative_to(ROOT)}: its copy of the main job's table differs: {missing[0]}"


def test_readme_is_short():
    size = len(_text(ROOT / "README.md"))
    assert size < README_LIMIT, f"README.md has {size} characters (limit {README_LIMIT}): move detail to docs/"


def test_the_methods_table_has_every_method_with_its_defaults():
    from dataclasses import fields

    from unlearn_search.methods import METHODS

    doc = _text(DOCS / "methods.md")
    for name in METHODS.names():
        m = METHODS.get(name)
        if not m.builtin:
            continue  # an installed plugin documents itself
        row = (f"| `{name}` | {m.summary.strip().splitlines()[0]} | "
               + ", ".join(f"{f.name}={f.default}" for f in fields(m.Config)) + " |")
        assert row in doc, f"docs/methods.md: the row of {name} is not {row}"


def test_no_page_or_module_cites_a_file_outside_the_repository():
    """The facts the docs and the code rely on from the paper and the methods' reference code are in the repository,
    in our words (docs/paper.md, docs/references.md); nothing cites the team's private notes (PAPER.md,
    REFERENCES.md), which a reader of the repository does not have."""
    outside = re.compile(r"\b(PAPER|REFERENCES)\.md\b")
    files = [*ROOT.joinpath("unlearn_search").rglob("*.py"), *DOCS.glob("*.md"), ROOT / "README.md",
             *ROOT.joinpath("benchmarks").glob("*.py")]
    cited = [str(f.relative_to(ROOT)) for f in files if outside.search(_text(f))]
    assert not cited, f"cite docs/paper.md or docs/references.md instead: {cited}"
    for page in ("paper.md", "references.md"):
        assert f"]({page})" in _text(DOCS / "README.md")


def test_entry_points_name_every_preset_dataset_and_model_the_code_offers():
    """Each preset, dataset (and dataset source), model (and model family prefix) the registries offer has its
    name in the scenario parameters' rows of docs/entry_points.md; and every name those rows give in backquotes is
    one the code accepts (no stale name)."""
    from unlearn_search.data import DATASET_SOURCES, DATASETS
    from unlearn_search.data.text import TEXT_DATASETS, TEXT_PREFIX
    from unlearn_search.models import MODELS, TIMM_PREFIX
    from unlearn_search.models.frozen import PREFIX as FROZEN_PREFIX
    from unlearn_search.models.text import HF_PREFIX, TEXT_MODELS
    from unlearn_search.presets import PRESETS

    rows = {line.split("|")[1].strip().strip("`"): line for line in _text(DOCS / "entry_points.md").splitlines()
            if line.startswith("| `preset`") or line.startswith("| `dataset`") or line.startswith("| `model`")}
    offered = {
        "preset": set(PRESETS.names()),
        "dataset": {*DATASETS.names(), *TEXT_DATASETS.names(), *(f"{s}:" for s in DATASET_SOURCES.names()),
                    TEXT_PREFIX},
        "model": {*MODELS.names(), *TEXT_MODELS.names(), TIMM_PREFIX, HF_PREFIX, FROZEN_PREFIX},
    }
    for param, names in offered.items():
        documented = set(re.findall(r"`([^`]+)`", rows[param].split("|")[3]))
        stems = {d.split("<")[0] for d in documented}  # `npz:<file>` -> `npz:`
        missing = {n for n in names if n not in stems}
        assert not missing, f"docs/entry_points.md's {param} row omits {sorted(missing)}"
        stale = {d for d in stems if d not in names and d not in ("default", "@")}  # `@<n_train>,<n_test>`: a suffix
        assert not stale, f"docs/entry_points.md's {param} row names {sorted(stale)}, which the code does not offer"
