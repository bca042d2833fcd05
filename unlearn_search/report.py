"""The comparison table and curves, as pure functions of per-seed metrics (no MLflow, no Optuna).

Input: for each seed, a mapping row name -> metrics dict (or None when a method found no feasible trial). Rows are
"no unlearning" (the poisoned model), each method's best feasible trial, and "retrain".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import verdict
from .attacks import ATTACKS

#: (metric key, column title) of the comparison table, in order.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("budget_used", "budget used"),
    ("test_acc", "test acc"),
    ("removal", "removal"),
    *(col for name in ATTACKS.names() for col in ATTACKS.get(name).columns),
    ("mia_tpr_at_1fpr", "MIA TPR@1%FPR"),
    ("lira_tpr_at_1fpr", "LiRA TPR@1%FPR"),  # only with compare's --lira-shadows (`analysis.lira`)
    ("lira_auc", "LiRA AUC"),
    ("ulira_auc", "U-LiRA AUC"),  # only with compare's --ulira (`analysis.ulira`)
    ("removal_discovered", "removal (discovered)"),  # only with discovered_fraction < 1
    ("removal_undiscovered", "removal (undiscovered)"),
)


def _columns(rows: Sequence[Row]) -> list[tuple[str, str]]:
    """The columns some row has a value for (an attack's own metrics appear only in its scenarios)."""
    return [(k, t) for k, t in COLUMNS if any(k in r.mean for r in rows)]


#: The search counts as still improving when its best feasible trial came in this last share of the trials.
IMPROVING_TAIL = 0.2
REFERENCE_ROWS = ("no unlearning", "retrain")


def still_improving(history: Sequence[float], tail: float = IMPROVING_TAIL) -> bool:
    """Whether the best value of ``history`` (removal per finished trial in trial order, NaN where a trial has none)
    came in its last ``tail`` share: the search had not settled, so more trials may find a better case."""
    v = np.asarray(history, float)
    if len(v) == 0 or not np.isfinite(v).any():
        return False
    best = int(np.nanargmax(v))  # the first trial that reached the best value
    return best >= len(v) - max(1, math.ceil(tail * len(v)))


@dataclass
class Row:
    name: str
    n: int  # seeds with a value
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)  # across seeds (n > 1)
    removed: int = 0  # seeds where the verdict says "poison removed"
    missing: int = 0  # seeds without a feasible trial
    values: dict[str, list[float]] = field(default_factory=dict)  # per seed with a value, in seed order
    ci: tuple[float, float] = (math.nan, math.nan)  # 95% interval of the mean removal over seeds
    combined_pvalue: float = math.nan  # the seeds' residual tests combined (`verdict.combined_pvalue`)
    combined_removed: bool | None = None  # the verdict over seeds (None for the reference rows)
    improving: int = 0  # seeds whose search was still improving at its end
    combination: str = "stouffer"  # how the seeds' tests were combined

    @property
    def disagree(self) -> bool:
        return 0 < self.removed < self.n


def aggregate(
    per_seed: Sequence[dict[str, dict[str, float] | None]],
    order: Sequence[str],
    combination: str = "stouffer",
) -> list[Row]:
    """Rows over seeds: means and standard deviations, the removal's 95% interval, the per-seed and the combined
    verdict. A method's per-seed metrics may carry ``residual_min_pvalue`` and ``search_still_improving``."""
    rows = []
    for name in order:
        values = [seed_rows.get(name) for seed_rows in per_seed]
        present = [v for v in values if v is not None]
        row = Row(name=name, n=len(present), missing=len(values) - len(present), combination=combination)
        for key in sorted({k for v in present for k in v}):
            xs = np.array([v[key] for v in present if key in v and v[key] is not None], dtype=float)
            xs = xs[np.isfinite(xs)]
            if len(xs):
                row.values[key] = xs.tolist()
                row.mean[key] = float(xs.mean())
                if len(xs) > 1:
                    row.std[key] = float(xs.std(ddof=1))
        row.removed = sum(int(v.get("poison_removed", 0.0) >= 0.5) for v in present)
        row.improving = sum(int(v.get("search_still_improving", 0.0) >= 0.5) for v in present)
        if "removal" in row.values and name not in REFERENCE_ROWS:
            _, lo, hi = verdict.mean_ci(row.values["removal"])
            row.ci = (lo, hi)
        if name not in REFERENCE_ROWS and present and all("removal_pvalue" in v for v in present):
            p, removed = verdict.seeds_verdict(
                [v["removal_pvalue"] for v in present], [v.get("residual_min_pvalue", 0.0) for v in present],
                [v.get("poison_removed", 0.0) >= 0.5 for v in present], combination)
            row.combined_pvalue = p
            row.combined_removed = removed and row.missing == 0
        rows.append(row)
    return rows


def _cell(row: Row, key: str) -> str:
    if key not in row.mean:
        return "–"
    m = row.mean[key]
    if key == "removal" and math.isfinite(row.ci[0]):
        return f"{m:.3g} [{row.ci[0]:.3g}, {row.ci[1]:.3g}]"
    if key in row.std:
        return f"{m:.3g} ± {row.std[key]:.2g}"
    if key == "gus" and "gus_se" in row.mean:  # one seed: the standard error of the mean over poisons
        return f"{m:.3g} ± {row.mean['gus_se']:.2g}"
    return f"{m:.3g}"


def headline(rows: Sequence[Row], n_seeds: int, attack: str, lira_shadows: int = 0) -> str:
    """The comparison's answer in one sentence: which methods removed the poison at their best case, and the best
    mean removal found; with LiRA (``lira_shadows``), which methods' best models it still sees as members."""
    methods = [r for r in rows if r.name not in REFERENCE_ROWS]
    over = f"over {n_seeds} seeds" if n_seeds > 1 else "on 1 seed"
    removed = [r.name for r in methods if (r.combined_removed if r.combined_removed is not None
                                           else r.n > 0 and r.removed == r.n)]
    if not methods:
        return f"{attack} poisoning, {over}: no method compared."
    if removed:
        who = f"{', '.join(removed)} removed the poison" + ("" if len(removed) == len(methods) else
                                                            f"; {len(methods) - len(removed)} of {len(methods)} "
                                                            "methods did not")
    else:
        who = f"none of the {len(methods)} methods removed the poison, even at its best case"
    scored = [r for r in methods if "removal" in r.mean]
    best = max(scored, key=lambda r: r.mean["removal"], default=None)
    top = (f" Highest mean removal: {best.name}, {_cell(best, 'removal')} (0 = no unlearning, 1 = retraining)."
           if best is not None else "")
    return f"{attack} poisoning, {over}: {who}.{top}{_lira_sentence(rows) if lira_shadows else ''}"


def _lira_sentence(rows: Sequence[Row]) -> str:
    """LiRA's view, in words: the references' TPR at 1% FPR and the methods still above twice the retrained one's."""
    lira = {r.name: r.mean.get("lira_tpr_at_1fpr", float("nan")) for r in rows}
    floor = 2 * max(lira.get("retrain", float("nan")), 0.01)
    still = [n for n, v in lira.items() if n not in REFERENCE_ROWS and v > floor]
    return (f" LiRA at 1% FPR (mean over seeds): poisoned {lira.get('no unlearning', float('nan')):.2f}, retrained "
            f"{lira.get('retrain', float('nan')):.2f}; "
            + (f"still above twice the retrained model's for {', '.join(still)}." if still else
               "no method's best model above twice the retrained model's."))


def verdict_cell(row: Row) -> str:
    """The verdict in words: per seed, and over seeds with the combined test; disagreeing seeds are said so."""
    if row.n == 0:
        return "no feasible trial"
    if row.name in REFERENCE_ROWS:
        return "reference"
    if row.n == 1 and row.missing == 0:
        return "removed" if row.removed else "not removed"
    total = row.n + row.missing
    if row.combined_removed is None:  # no residual test to combine
        text = f"removed in {row.removed} of {total} seeds"
    else:
        test = verdict.COMBINATION_NAMES[row.combination]
        text = "removed" if row.combined_removed else "not removed"
        text += f" ({test} p = {row.combined_pvalue:.2g}); removed in {row.removed} of {total} seeds"
    if row.disagree:
        text += ": the seeds disagree"
    if row.missing:
        text += f"; no feasible trial in {row.missing}"
    return text


def search_cell(row: Row) -> str:
    if row.name in REFERENCE_ROWS or row.n == 0:
        return "–"
    if not row.improving:
        return "settled"
    where = "" if row.n == 1 else f" in {row.improving} of {row.n} seeds"
    return f"still improving{where}: run more trials"


def markdown(rows: Sequence[Row], n_seeds: int, keys: Sequence[str] | None = None) -> str:
    """The comparison table; ``keys``: only these metric columns (in this order) and no search column (the short
    form a run's description shows)."""
    cols = _columns(rows)
    if keys is not None:
        titles = dict(cols)
        cols = [(k, titles[k]) for k in keys if k in titles]
    head = ["method", *(title for _, title in cols), "poison removed", *(["search"] if keys is None else [])]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([r.name, *(_cell(r, k) for k, _ in cols), verdict_cell(r),
                                        *([search_cell(r)] if keys is None else [])]) + " |")
    if n_seeds > 1:
        note = (f"{n_seeds} seeds, each a full scenario with its own references and search; removal: mean [95% "
                f"t-interval] over seeds; other columns: mean ± std over seeds; poison removed: "
                f"{verdict.COMBINATION_NAMES[rows[0].combination]} combining the per-seed tests at level "
                f"{verdict.LEVEL}")
    else:
        note = "1 seed" + ("; GUS ± its standard error over poisons" if any("gus" in r.mean for r in rows) else "")
    note += (f"; search: 'still improving' when the best feasible trial came in the last "
             f"{IMPROVING_TAIL:.0%} of the trials")
    return "\n".join(lines) + f"\n\n({note})\n"


def per_seed_csv(per_seed: Sequence[dict[str, dict[str, float] | None]], seeds: Sequence[int],
                 order: Sequence[str]) -> str:
    """One line per (seed, row): what the aggregated table is made of."""
    keys = ["budget_used", "test_acc", "removal", "removal_pvalue", "poison_removed", "search_still_improving"]
    out = [",".join(["seed", "method", *keys])]
    for seed, rows in zip(seeds, per_seed, strict=True):
        for name in order:
            m = rows.get(name)
            out.append(",".join([str(seed), name, *(repr(m[k]) if m and k in m else "" for k in keys)]))
    return "\n".join(out) + "\n"


def side_by_side(tables: Mapping[str, Sequence[Row]], metrics: Mapping[str, str], n_seeds: int) -> str:
    """One row per method; for each attack its own metric (``metrics[attack]``), the removal and the verdict."""
    titles = {k: t for k, t in COLUMNS}
    head = ["method"]
    for attack, key in metrics.items():
        head += [f"{attack}: {titles.get(key, key)}", f"{attack}: removal", f"{attack}: poison removed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    names = [r.name for r in next(iter(tables.values()))]
    for name in names:
        cells = [name]
        for attack, key in metrics.items():
            row = next((r for r in tables[attack] if r.name == name), None)
            if row is None:
                cells += ["–", "–", "–"]
            else:
                cells += [_cell(row, key), _cell(row, "removal"), verdict_cell(row)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\n({n_seeds} seed{'s' if n_seeds > 1 else ''} per attack)\n"


def csv(rows: Sequence[Row]) -> str:
    keys = [k for k, _ in _columns(rows)] + ["gus_se", "removal_pvalue"]
    head = ["method", "n_seeds", "removed", "combined_pvalue", "combined_removed", "removal_ci_low",
            "removal_ci_high", "search_still_improving", *keys, *(f"{k}_std" for k in keys)]
    out = [",".join(head)]
    for r in rows:
        combined = "" if r.combined_removed is None else str(int(r.combined_removed))
        vals = [r.name, str(r.n), str(r.removed), repr(r.combined_pvalue), combined, repr(r.ci[0]), repr(r.ci[1]),
                str(r.improving)]
        vals += [repr(r.mean[k]) if k in r.mean else "" for k in keys]
        vals += [repr(r.std[k]) if k in r.std else "" for k in keys]
        out.append(",".join(vals))
    return "\n".join(out) + "\n"


def best_at_levels(feasible: Sequence[dict[str, float]], levels: Sequence[float]) -> list[float]:
    """Best removal among feasible trials that used at most each budget level (NaN where none did)."""
    out = []
    for level in levels:
        ok = [m["removal"] for m in feasible if m["budget_used"] <= level + 1e-12 and math.isfinite(m["removal"])]
        out.append(max(ok) if ok else float("nan"))
    return out


def describe_unlearned(method: str, metrics: Mapping[str, float], refs: Mapping[str, Mapping[str, float]],
                       versions: Mapping[str, Any], key: str, origin: str, residual_test: str) -> str:
    """The Markdown description of a registered unlearned model: its verdict, its key numbers beside the two
    references', and which reference versions it was judged against."""
    removed = bool(metrics.get("poison_removed", 0.0))
    rows = [("removal (0 = none, 1 = retrain)", "removal", 0.0, 1.0), ("test accuracy", "test_acc", None, None),
            (key, key, None, None), ("MIA TPR at 1% FPR", "mia_tpr_at_1fpr", None, None),
            ("compute used (retrain = 1)", "budget_used", 0.0, 1.0)]
    lines = [f"**{method}**, {origin}: poison **{'removed' if removed else 'NOT removed'}** ({residual_test}: "
             f"p = {metrics.get('removal_pvalue', float('nan')):.3g}).", "",
             f"| | {method} | poisoned | retrain |", "|---|---|---|---|"]
    for title, k, p_default, r_default in rows:
        p = refs["poisoned"].get(k, p_default)
        r = refs["retrain"].get(k, r_default)
        lines.append(f"| {title} | {_g(metrics.get(k))} | {_g(p)} | {_g(r)} |")
    lines += ["", f"Judged against `{versions['poisoned']}` (poisoned) and `{versions['retrain']}` (retrain)."]
    return "\n".join(lines)


def _g(v: Any) -> str:
    return "-" if v is None or not math.isfinite(float(v)) else f"{float(v):.4g}"
