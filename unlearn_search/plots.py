"""Figures for studies, each as a matplotlib figure (PNG) and a plotly figure (interactive HTML).

Pure functions of numbers: the caller collects the data and logs the figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt
import numpy as np
import plotly.graph_objects as go
from cycler import cycler
from matplotlib.figure import Figure
from scipy import stats

#: Marker shapes that tell points apart without colour (cycled with tab10's colours).
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
#: Room (inches) added to a figure's width for its legend beside the axes.
LEGEND_WIDTH = 2.5
#: Twenty distinct line colours: tab10's first (tab20's dark shades), then tab20's light ones, so a comparison of
#: every method (13 and more lines) repeats no colour; the first ten are tab10's, as before.
COLORS = tuple(plt.get_cmap("tab20").colors[0::2] + plt.get_cmap("tab20").colors[1::2])  # type: ignore[attr-defined]
plt.rcParams["axes.prop_cycle"] = cycler(color=COLORS)


def _legend_beside(ax: plt.Axes, fontsize: int = 7) -> None:
    """The legend to the right of the axes, where it covers no point, bar or line whatever the data (matplotlib's
    "best" placement inside the axes covered the retrain line or a method's curve); ``tight_layout`` makes room."""
    ax.legend(fontsize=fontsize, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def removal_vs_compute(
    budget: Sequence[float], removal: Sequence[float], feasible: Sequence[bool], labels: Sequence[str], title: str,
    ylabel: str = "poison removal (0 = none, 1 = retrain)",
) -> tuple[Figure, go.Figure]:
    """Each trial's removal against the compute it used, with the no-unlearning (0, 0) and retrain (1, 1) points
    (the search aims at the retrain line: above it is an overshoot, as far from retraining as the same distance
    below)."""
    b, r, f = np.asarray(budget, float), np.asarray(removal, float), np.asarray(feasible, bool)
    fig, ax = plt.subplots(figsize=(6 + LEGEND_WIDTH, 4))
    ax.scatter(b[f], r[f], label="trial (utility kept)", color="tab:blue")
    ax.scatter(b[~f], r[~f], label="trial (utility lost)", color="tab:gray", marker="x")
    ax.scatter([0], [0], color="tab:red", marker="s", label="no unlearning")
    ax.scatter([1], [1], color="tab:green", marker="*", s=150, label="retrain (cost 1.0)")
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_xlabel("compute used (fraction of retraining)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.axhline(1.0, color="tab:green", lw=0.5, ls="--")
    _legend_beside(ax, fontsize=8)
    fig.tight_layout()
    pf = go.Figure()
    pf.add_scatter(x=b[f], y=r[f], mode="markers", name="trial (utility kept)",
                   text=[lab for lab, ok in zip(labels, f, strict=True) if ok])
    pf.add_scatter(x=b[~f], y=r[~f], mode="markers", name="trial (utility lost)", marker_symbol="x",
                   text=[lab for lab, ok in zip(labels, f, strict=True) if not ok])
    pf.add_scatter(x=[0], y=[0], mode="markers", name="no unlearning", marker_symbol="square")
    pf.add_scatter(x=[1], y=[1], mode="markers", name="retrain", marker_symbol="star", marker_size=14)
    pf.update_layout(title=title, xaxis_title="compute used (fraction of retraining)", yaxis_title=ylabel)
    return fig, pf


def iz_distributions(series: dict[str, np.ndarray], title: str) -> tuple[Figure, go.Figure]:
    """Histograms of per-poison I_z for several models against the N(0, 1) density of a model that never saw them."""
    allv = np.concatenate([np.asarray(v, float) for v in series.values()])
    lo, hi = min(-4.0, float(allv.min())), max(4.0, float(allv.max()))
    bins = np.linspace(lo, hi, 40).tolist()
    grid = np.linspace(lo, hi, 200)
    fig, ax = plt.subplots(figsize=(6 + LEGEND_WIDTH, 4))
    for name, v in series.items():
        ax.hist(v, bins=bins, density=True, histtype="step", lw=1.5, label=f"{name} (mean {np.mean(v):.2f})")
    ax.plot(grid, stats.norm.pdf(grid), color="black", ls="--", label="N(0, 1): never saw the noise")
    ax.set_xlabel("I_z (GUS statistic per poison)")
    ax.set_ylabel("density")
    ax.set_title(title)
    _legend_beside(ax, fontsize=8)
    fig.tight_layout()
    pf = go.Figure()
    for name, v in series.items():
        pf.add_histogram(x=v, histnorm="probability density", name=name, opacity=0.5, xbins={"size": (hi - lo) / 39})
    pf.add_scatter(x=grid, y=stats.norm.pdf(grid), mode="lines", name="N(0, 1)")
    pf.update_layout(barmode="overlay", title=title, xaxis_title="I_z", yaxis_title="density")
    return fig, pf


def history(values: Sequence[float], title: str,
            ylabel: str = "closeness to retraining, -|1 - removal|") -> tuple[Figure, go.Figure]:
    """Objective per trial and the best so far (feasible trials only; NaN where a trial has no value)."""
    v = np.asarray(values, float)
    best = np.fmax.accumulate(np.where(np.isfinite(v), v, -np.inf))
    best[~np.isfinite(best)] = np.nan
    x = np.arange(len(v))
    fig, ax = plt.subplots(figsize=(6 + LEGEND_WIDTH, 4))
    ax.scatter(x, v, label="trial", s=15)
    ax.step(x, best, where="post", color="tab:red", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    _legend_beside(ax, fontsize=8)
    fig.tight_layout()
    pf = go.Figure()
    pf.add_scatter(x=x, y=v, mode="markers", name="trial")
    pf.add_scatter(x=x, y=best, mode="lines", line_shape="hv", name="best so far")
    pf.update_layout(title=title, xaxis_title="trial", yaxis_title=ylabel)
    return fig, pf


def importances(names: Sequence[str], values: Sequence[float], title: str) -> tuple[Figure, go.Figure]:
    fig, ax = plt.subplots(figsize=(6, max(2.0, 0.4 * len(names) + 1)))
    ax.barh(list(names), list(values))
    ax.set_xlabel("importance for closeness to retraining (fANOVA)")
    ax.set_title(title)
    fig.tight_layout()
    pf = go.Figure(go.Bar(x=list(values), y=list(names), orientation="h"))
    pf.update_layout(title=title, xaxis_title="importance")
    return fig, pf


def removal_by_budget(
    levels: Sequence[float], curves: dict[str, tuple[Sequence[float], Sequence[float]]], title: str,
    xlabel: str = "compute budget (% of retraining)", retrain_label: str = "retrain (budget 100%)",
) -> tuple[Figure, go.Figure]:
    """The study's central figure: best removal found within each budget level, one line per method.

    ``curves``: method -> (mean removal per level, std per level; NaN std when one seed). References: retraining
    removes all (1, at a cost of 1.0), no unlearning removes none (0)."""
    x = np.asarray(levels, float) * 100
    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    pf = go.Figure()
    for name, (mean, std) in curves.items():
        m, s = np.asarray(mean, float), np.asarray(std, float)
        ax.plot(x, m, marker="o", label=name)
        if np.isfinite(s).any():
            ax.fill_between(x, m - np.nan_to_num(s), m + np.nan_to_num(s), alpha=0.15)
        pf.add_scatter(x=x, y=m, mode="lines+markers", name=name,
                       error_y={"type": "data", "array": np.nan_to_num(s), "visible": bool(np.isfinite(s).any())})
    ax.axhline(1.0, color="black", ls="--", lw=1, label=retrain_label)
    ax.axhline(0.0, color="gray", ls=":", lw=1, label="no unlearning")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("best poison removal found")
    ax.set_title(title)
    _legend_beside(ax)
    fig.tight_layout()
    pf.add_hline(y=1.0, line_dash="dash", annotation_text="retrain")
    pf.add_hline(y=0.0, line_dash="dot", annotation_text="no unlearning")
    pf.update_layout(title=title, xaxis_title=xlabel, yaxis_title="best poison removal")
    return fig, pf


def labelled_scatter(
    names: Sequence[str], x: Sequence[float], y: Sequence[float], xlabel: str, ylabel: str, title: str,
    hlines: Sequence[tuple[float, str]] = (), vlines: Sequence[tuple[float, str]] = (),
) -> tuple[Figure, go.Figure]:
    """One point per method (e.g. GUS z against MIA TPR: 'forgotten' by MIA, still poisoned by GUS).

    In the PNG each method has its own marker and colour, named in a legend beside the axes: methods often land on
    nearly the same point, where text labels written next to the points overlapped into an unreadable block."""
    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    colors = [plt.get_cmap("tab10")(i) for i in range(10)]
    for i, (n, xi, yi) in enumerate(zip(names, x, y, strict=True)):
        ax.scatter([xi], [yi], marker=MARKERS[i % len(MARKERS)], color=colors[i % len(colors)], s=60, label=n,
                   alpha=0.85, edgecolors="black", linewidths=0.5)
    for v, lab in hlines:
        ax.axhline(v, color="gray", ls="--", lw=1, label=lab)
    for v, lab in vlines:
        ax.axvline(v, color="gray", ls=":", lw=1, label=lab)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    _legend_beside(ax)
    fig.tight_layout()
    pf = go.Figure(go.Scatter(x=list(x), y=list(y), mode="markers+text", text=list(names), textposition="top center"))
    for v, lab in hlines:
        pf.add_hline(y=v, line_dash="dash", annotation_text=lab)
    for v, lab in vlines:
        pf.add_vline(x=v, line_dash="dot", annotation_text=lab)
    pf.update_layout(title=title, xaxis_title=xlabel, yaxis_title=ylabel)
    return fig, pf


def grouped_bars(
    names: Sequence[str], groups: Mapping[str, Sequence[float]], ylabel: str, title: str,
    reference_lines: bool = True,
) -> tuple[Figure, go.Figure]:
    """One group of bars per name (method), one bar per series (attack); NaN bars are left out. With
    ``reference_lines`` (removal), dashed lines at no unlearning (0) and retraining (1)."""
    n, k = len(names), max(len(groups), 1)
    width = 0.8 / k
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * n + 2) + LEGEND_WIDTH, 4.5))
    for i, (label, values) in enumerate(groups.items()):
        ax.bar(np.arange(n) + (i - (k - 1) / 2) * width, np.asarray(values, float), width, label=label)
    ax.set_xticks(np.arange(n), list(names), rotation=30, ha="right", fontsize=8)
    if reference_lines:
        ax.axhline(0.0, color="tab:red", lw=0.8, ls="--")
        ax.axhline(1.0, color="tab:green", lw=0.8, ls="--")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    _legend_beside(ax, fontsize=8)
    fig.tight_layout()
    pf = go.Figure([go.Bar(name=label, x=list(names), y=list(values)) for label, values in groups.items()])
    pf.update_layout(barmode="group", title=title, yaxis_title=ylabel)
    return fig, pf


def lines(series: Mapping[str, Sequence[float]], xlabel: str, ylabel: str, title: str) -> tuple[Figure, go.Figure]:
    """One line per series against its index (a step count), with a dotted line at 0."""
    fig, ax = plt.subplots(figsize=(6 + LEGEND_WIDTH, 4))
    for label, values in series.items():
        ax.plot(np.arange(1, len(values) + 1), np.asarray(values, float), label=label, lw=1.2)
    ax.axhline(0.0, color="grey", lw=0.8, ls=":")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    _legend_beside(ax, fontsize=8)
    fig.tight_layout()
    pf = go.Figure([go.Scatter(x=list(range(1, len(v) + 1)), y=list(v), mode="lines", name=label)
                    for label, v in series.items()])
    pf.update_layout(title=title, xaxis_title=xlabel, yaxis_title=ylabel)
    return fig, pf


def removal_by_seed(
    names: Sequence[str], per_seed: Sequence[Sequence[float]], ci: Sequence[tuple[float, float]], title: str
) -> tuple[Figure, go.Figure]:
    """The verdict's spread: each seed's best removal as a dot per method, the mean as a bar with its 95% interval
    (no interval with one seed); dashed lines at no unlearning (0) and retraining (1)."""
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(names) + 2) + LEGEND_WIDTH, 4.5))
    pf = go.Figure()
    jitter = np.random.default_rng(0).uniform(-0.12, 0.12, size=max((len(v) for v in per_seed), default=0))
    for i, (name, values, (lo, hi)) in enumerate(zip(names, per_seed, ci, strict=True)):
        v = np.asarray(values, float)
        if not len(v):
            continue
        mean = float(v.mean())
        ax.scatter(i + jitter[: len(v)], v, color="tab:blue", s=18, alpha=0.7, zorder=3,
                   label="one seed's best case" if i == 0 else None)
        if np.isfinite(lo):
            ax.errorbar([i], [mean], yerr=[[mean - lo], [hi - mean]], color="black", capsize=6, lw=1.5, zorder=4,
                        label="mean, 95% interval over seeds" if i == 0 else None)
        ax.scatter([i], [mean], color="black", marker="_", s=400, zorder=4)
        pf.add_scatter(x=[name] * len(v), y=v, mode="markers", name=name, showlegend=False,
                       text=[f"seed {j}" for j in range(len(v))])
        err = None if not np.isfinite(lo) else {"type": "data", "symmetric": False, "array": [hi - mean],
                                                 "arrayminus": [mean - lo]}
        pf.add_scatter(x=[name], y=[mean], mode="markers", marker_symbol="line-ew-open", marker_size=24,
                       marker_color="black", error_y=err, showlegend=False)
    ax.axhline(1.0, color="tab:green", ls="--", lw=1, label="retrain")
    ax.axhline(0.0, color="tab:red", ls=":", lw=1, label="no unlearning")
    ax.set_xticks(x, list(names), rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("best poison removal found (0 = none, 1 = retrain)")
    ax.set_title(title, fontsize=10)
    _legend_beside(ax)
    fig.tight_layout()
    pf.add_hline(y=1.0, line_dash="dash", annotation_text="retrain")
    pf.add_hline(y=0.0, line_dash="dot", annotation_text="no unlearning")
    pf.update_layout(title=title, yaxis_title="best poison removal found")
    return fig, pf


def best_so_far(histories: Mapping[str, Sequence[Sequence[float]]], title: str,
                ylabel: str = "best feasible removal so far", target: float = 1.0) -> tuple[Figure, go.Figure]:
    """Per method, the best feasible value (the search's objective) found after each trial, averaged over seeds
    (thin lines: each seed; the mean starts once every seed has a feasible trial), with retraining's value
    ``target`` as a line. ``histories``: method -> per seed, the value of each finished trial in order (NaN where
    none)."""
    fig, ax = plt.subplots(figsize=(7 + LEGEND_WIDTH, 4.5))
    pf = go.Figure()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, seeds) in enumerate(histories.items()):
        color = colors[i % len(colors)]
        curves = []
        for h in seeds:
            v = np.asarray(h, float)
            best = np.fmax.accumulate(np.where(np.isfinite(v), v, -np.inf)) if len(v) else v
            best = np.where(np.isfinite(best), best, np.nan)
            curves.append(best)
            if len(seeds) > 1:
                ax.step(np.arange(1, len(best) + 1), best, where="post", color=color, lw=0.6, alpha=0.4)
        n = max((len(c) for c in curves), default=0)
        if not n:
            continue
        padded = np.full((len(curves), n), np.nan)
        for j, c in enumerate(curves):
            padded[j, : len(c)] = c
            if len(c):
                padded[j, len(c):] = c[-1]  # a shorter study keeps its final best
        mean = padded.mean(axis=0)  # NaN until every seed has a feasible trial: a mean of fewer seeds could fall
        ax.step(np.arange(1, n + 1), mean, where="post", color=color, lw=2, label=name)
        pf.add_scatter(x=np.arange(1, n + 1), y=mean, mode="lines", line_shape="hv", name=name)
    ax.axhline(target, color="black", ls="--", lw=1, label="retrain")
    ax.set_xlabel("trials")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    _legend_beside(ax)
    fig.tight_layout()
    pf.add_hline(y=target, line_dash="dash", annotation_text="retrain")
    pf.update_layout(title=title, xaxis_title="trials", yaxis_title=ylabel)
    return fig, pf
