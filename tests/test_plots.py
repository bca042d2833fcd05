"""Figures read by people: no label collides with another, no legend covers the data, interactive pages offline."""

from __future__ import annotations

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
