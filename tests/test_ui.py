"""The MLflow UI as a user sees it: a real `mlflow ui` over a store made by a small compare, driven in Debian's
Chromium by Playwright (its own browser download does not work here, so the system binary is launched).

Checks what a newcomer looks for: the compare run's Overview shows the headline and the table, one bar chart of
``removal`` names every method, and the registered unlearned model shows its ``@best`` alias and its description.
Screenshots land in the test's temporary folder. Without /usr/bin/chromium the module is skipped, except under CI
(``CI`` set), where that is a failure: CI installs it (.ci/run).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import services

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: Flags that keep Chromium from reaching for the network (closed here) and from needing a sandbox (root in CI).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
METHODS = ("gd", "ga")

pytestmark = pytest.mark.browser


def _need_chromium() -> None:
    if Path(CHROMIUM).exists():
        return
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium for this test")
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); CI runs this test")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A small compare (2 methods, 2 trials, 1 seed) made by the CLI in a subprocess, as a user would."""
    _need_chromium()
    root = tmp_path_factory.mktemp("ui_store")
    uri = f"sqlite:///{root}/mlflow.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    out = subprocess.run([sys.executable, "-m", "unlearn_search", "-q", "compare", "--methods", ",".join(METHODS),
                          "--stop", "fixed", "--n-trials", "2", "--train-epochs", "3", "--seeds", "1",
                          "--utility-tolerance", "1",
                          "--storage", "j.log"], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    url = re.search(r"^results: (\S+)", out.stdout, re.M)
    assert url is not None, out.stdout[-2000:]
    return {"root": str(root), "uri": uri, "url": url.group(1), "stdout": out.stdout}


@pytest.fixture(scope="module")
def ui(store: dict[str, str]) -> Iterator[str]:
    """`mlflow ui` on the store, on a free port of 127.0.0.1; its base URL. Stopped (with its workers) after."""
    with services.mlflow_ui(store["uri"], Path(store["root"])) as base:
        yield base


@pytest.fixture(scope="module")
def browser(ui: str, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium_profile")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                                        viewport={"width": 1600, "height": 1000})
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser, tmp_path):  # type: ignore[no-untyped-def]
    p = browser.new_page()
    p.set_default_timeout(30_000)
    yield p
    p.close()


def _local(url: str, base: str) -> str:
    """The printed URL (``mlflow ui``'s default address) on this test's server."""
    return re.sub(r"^http://127\.0\.0\.1:5000", base, url)


def test_compare_overview_shows_the_headline_and_the_table(store, ui, page, tmp_path):  # type: ignore[no-untyped-def]
    from mlflow.tracking import MlflowClient

    run_id = re.search(r"/runs/([0-9a-f]+)", store["url"]).group(1)  # type: ignore[union-attr]
    headline = MlflowClient(store["uri"]).get_run(run_id).data.tags["headline"]
    page.goto(_local(store["url"], ui))
    page.get_by_text("Description").first.wait_for()
    page.get_by_text(headline[:60]).first.wait_for()  # the answer, in words, on the Overview
    if page.get_by_text("Show more").count():
        page.get_by_text("Show more").first.click()
    table = page.locator("table").filter(has_text="poison removed").first
    table.wait_for()
    page.screenshot(path=str(tmp_path / "compare_overview.png"), full_page=True)
    cells = table.inner_text()
    for row in ("no unlearning", *METHODS, "retrain"):
        assert row in cells, (row, cells)
    assert page.url.startswith(ui) and "workflowType=machine_learning" in page.url


def test_one_removal_bar_chart_names_every_method(store, ui, page, tmp_path):  # type: ignore[no-untyped-def]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store["uri"])
    experiment = client.get_experiment_by_name("unlearn_search")
    page.goto(f"{ui}/#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning"
              "&compareRunsMode=CHART")
    page.get_by_placeholder("Search metric charts").fill("removal")
    cards = page.locator("[data-testid='draggable-chart-cards-grid'] > *")
    card = cards.filter(has=page.get_by_text("removal", exact=True)).first
    card.wait_for()
    page.wait_for_timeout(500)  # the bars are drawn after the card appears
    page.screenshot(path=str(tmp_path / "removal_chart.png"))
    names = card.inner_text().splitlines()
    for row in ("no unlearning", *METHODS, "retrain"):  # the legend: one bar per table row
        assert row in names, (row, names)


def test_registered_best_model_shows_its_alias_and_description(store, ui, page, tmp_path):  # type: ignore[no-untyped-def]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store["uri"])
    name = "unlearn_search.unlearned.gd"
    mv = client.get_model_version_by_alias(name, "best")
    page.goto(f"{ui}/#/models/{name}/versions/{mv.version}")
    page.get_by_text("Judged against").first.wait_for()  # the description, rendered
    page.screenshot(path=str(tmp_path / "registered_version.png"), full_page=True)
    text = page.inner_text("body")
    assert "@best" in re.sub(r"\s", "", text), text[:2000]  # the alias chip, "@ best"
    (verdict,) = [v for v in ("not removed", "removed", "inconclusive", "attack too weak to judge")
                  if mv.description.split("\n")[0].split(": poison ")[1].startswith(f"{v};")]
    assert f"poison {verdict}" in text  # the description rendered (Markdown bold gone)
    assert "unlearn_search.retrain/" in text and "param.lr" in text


def test_interactive_page_draws_every_figure_offline(store, ui, page, tmp_path):  # type: ignore[no-untyped-def]
    """``plots/dashboard.html`` opened in the compare run's Artifacts tab draws every figure that has a PNG, and no
    request leaves 127.0.0.1: the page carries plotly.js itself (the per-figure HTML files that loaded it from a
    CDN were blank offline), once, so it stays under 5 MB."""
    from mlflow.tracking import MlflowClient
    from playwright.sync_api import expect

    run_id = re.search(r"/runs/([0-9a-f]+)", store["url"]).group(1)  # type: ignore[union-attr]
    arts = {Path(a.path).name: a.file_size for a in MlflowClient(store["uri"]).list_artifacts(run_id, "plots")}
    assert arts["dashboard.html"] < 5_000_000, arts
    figures = sorted(name[: -len(".png")] for name in arts if name.endswith(".png"))
    outside: list[str] = []

    def local_only(route):  # type: ignore[no-untyped-def]
        if route.request.url.startswith((ui, "blob:", "data:", "about:")):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", local_only)
    page.goto(re.sub(r"\?", "/artifacts/plots/dashboard.html?", _local(store["url"], ui), count=1))
    frame = page.frame_locator("iframe").first  # MLflow shows an HTML artifact in a sandboxed frame
    frame.locator(".js-plotly-plot .main-svg").first.wait_for()
    expect(frame.locator(".js-plotly-plot:has(.main-svg)")).to_have_count(len(figures))  # each one drawn
    page.screenshot(path=str(tmp_path / "dashboard_in_artifacts.png"))
    assert sorted(frame.locator("section > h2").all_inner_texts()) == figures
    assert not outside, outside
