"""Figures read by people: no label collides with another, no legend covers the data, interactive pages offline."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from unlearn_search import plots, tracking


def _overlap(a, b) -> bool:  # type: ignore[no-untyped-def]
    return not (a.x1 <= b.x0 or b.x1 <= a.x0 or a.y1 <= b.y0 or b.y1 <= a.y0)


def test_methods_on_one_spot_stay_readable():
    """Eight methods at almost the same point (the usual case: none removes the poison) are told apart by marker
    and colour in a legend outside the axes, not by text labels drawn over each other."""
    names = ["no unlearning", "gd", "ngd", "ga", "eu_k", "cf_k", "scrub", "neggrad_plus", "ssd", "retrain"]
    x = [0.03 + 0.0001 * i for i in range(len(names))]
    y = [3.9 - 0.001 * i for i in range(len(names))]
    fig, _ = plots.labelled_scatter(names, x, y, "MIA TPR", "GUS z", "t", hlines=[(1.645, "threshold")])
    ax = fig.axes[0]
    assert not ax.texts  # no annotation to collide
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()][: len(names)] == names
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box, axes_box = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
    assert not _overlap(box, axes_box)  # beside the axes: covers no point and no line
    markers = {(c.get_paths()[0].vertices.tobytes(), tuple(c.get_facecolor()[0])) for c in ax.collections}
    assert len(markers) == len(names)  # each method its own marker/colour pair


def test_removal_by_budget_legend_leaves_the_retrain_line_visible():
    curves = {m: ([0.1, 0.2], [0.01, 0.02]) for m in ("gd", "ngd", "ga", "eu_k", "cf_k", "scrub", "ssd")}
    fig, _ = plots.removal_by_budget([0.02, 0.1], curves, "t")
    ax = fig.axes[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    assert not _overlap(ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer))


def test_dashboard_is_one_offline_page():
    figures = [(f"f{i}", go.Figure(go.Scatter(x=[0, 1], y=[i, i]))) for i in range(3)]
    page = tracking.dashboard_html("title", figures)
    assert "<script src=\"http" not in page and page.count("* plotly.js v") == 1
    assert all(f'id="fig-f{i}"' in page for i in range(3))


METHODS = ["gd", "ngd", "ga", "eu_k", "cf_k", "scrub", "neggrad_plus", "ssd"]


def _every_figure() -> list[tuple[str, tuple]]:  # type: ignore[type-arg]
    """Each figure the project logs, from synthetic numbers of the size of the default study (8 methods, 3 seeds,
    20 trials each): (name, (matplotlib figure, plotly figure))."""
    rng = np.random.default_rng(0)
    rows = ["no unlearning", *METHODS, "retrain"]
    curves = {m: (rng.uniform(0, 1, 5).tolist(), rng.uniform(0, 0.1, 5).tolist()) for m in METHODS}
    histories = {m: [rng.uniform(0, 1, 20).tolist() for _ in range(3)] for m in METHODS}
    return [
        ("removal_vs_compute", plots.removal_vs_compute(rng.uniform(0.01, 0.1, 20), rng.uniform(0, 1.2, 20),
                                                        rng.uniform(0, 1, 20) > 0.3, [f"trial {i}" for i in range(20)],
                                                        "t")),
        ("iz_distributions", plots.iz_distributions({"poisoned": rng.normal(3, 1, 200),
                                                     "retrain": rng.normal(0, 1, 200)}, "t")),
        ("optimization_history", plots.history(rng.uniform(0, 1, 20).tolist(), "t")),
        ("removal_by_budget", plots.removal_by_budget([0.02, 0.04, 0.06, 0.08, 0.1], curves, "t")),
        ("gus_vs_mia", plots.labelled_scatter(rows, rng.uniform(0, 0.05, 10), rng.uniform(0, 5, 10), "x", "y", "t",
                                              hlines=[(1.645, "h")], vlines=[(0.01, "v")])),
        ("removal_by_attack", plots.grouped_bars(rows, {"gaussian": rng.uniform(0, 1, 10).tolist(),
                                                       "backdoor": rng.uniform(0, 1, 10).tolist()}, "y", "t")),
        ("removal_by_seed", plots.removal_by_seed(METHODS, [rng.uniform(0, 1, 3).tolist() for _ in METHODS],
                                                  [(0.1, 0.9)] * len(METHODS), "t")),
        ("search_progress", plots.best_so_far(histories, "t")),
    ]


def test_no_legend_covers_the_data():
    """Every PNG with a legend has it beside the axes: wherever the data fall, the legend covers none of it."""
    checked = 0
    for name, (fig, _) in _every_figure():
        ax = fig.axes[0]
        legend = ax.get_legend()
        if legend is None:
            continue
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        assert not _overlap(legend.get_window_extent(renderer), ax.get_window_extent(renderer)), name
        # and inside the figure: tight_layout made room for it, nothing is cut off the PNG
        assert fig.bbox.contains(*legend.get_window_extent(renderer).p1), name
        checked += 1
    assert checked == 8


def test_dashboard_of_a_full_study_is_bounded_and_offline():
    """The default study's compare page (8 methods, 3 seeds: its four figures with data) and a tune page: plotly.js
    once, no network, under 5 MB (plotly.js itself is about 4.8 MB; each figure adds kilobytes, not another copy)."""
    figures = {name: ply for name, (_, ply) in _every_figure()}
    for names in (["removal_by_seed", "search_progress", "removal_by_budget", "gus_vs_mia"],
                  ["removal_vs_compute", "optimization_history", "iz_distributions"]):
        page = tracking.dashboard_html("t", [(n, figures[n]) for n in names])
        assert len(page.encode()) < 5_000_000, len(page.encode())
        assert "<script src=" not in page and page.count("* plotly.js v") == 1
        assert page.count('class="plotly-graph-div"') == len(names)
