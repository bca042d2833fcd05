"""The comparison table and curves, as pure functions of per-seed metrics (no MLflow, no Optuna).

Input: for each seed, a mapping row name -> metrics dict (or None when a method found no feasible trial). Rows are
"no unlearning" (the poisoned model), each method's best feasible trial, and "retrain".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .attacks import ATTACKS

#: (metric key, column title) of the comparison table, in order.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("budget_used", "budget used"),
    ("test_acc", "test acc"),
    ("removal", "removal"),
    *(col for name in ATTACKS.names() for col in ATTACKS.get(name).columns),
    ("mia_tpr_at_1fpr", "MIA TPR@1%FPR"),
)


def _columns(rows: Sequence[Row]) -> list[tuple[str, str]]:
    """The columns some row has a value for (an attack's own metrics appear only in its scenarios)."""
    return [(k, t) for k, t in COLUMNS if any(k in r.mean for r in rows)]


@dataclass
class Row:
    name: str
    n: int  # seeds with a value
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)  # across seeds (n > 1)
    removed: int = 0  # seeds where the verdict says "poison removed"
    missing: int = 0  # seeds without a feasible trial


def aggregate(per_seed: Sequence[dict[str, dict[str, float] | None]], order: Sequence[str]) -> list[Row]:
    rows = []
    for name in order:
        values = [seed_rows.get(name) for seed_rows in per_seed]
        present = [v for v in values if v is not None]
        row = Row(name=name, n=len(present), missing=len(values) - len(present))
        for key in {k for v in present for k in v}:
            xs = np.array([v[key] for v in present if key in v and v[key] is not None], dtype=float)
            xs = xs[np.isfinite(xs)]
            if len(xs):
                row.mean[key] = float(xs.mean())
                if len(xs) > 1:
                    row.std[key] = float(xs.std(ddof=1))
        row.removed = sum(int(v.get("poison_removed", 0.0) >= 0.5) for v in present)
        rows.append(row)
    return rows


def _cell(row: Row, key: str) -> str:
    if key not in row.mean:
        return "–"
    m = row.mean[key]
    if key in row.std:
        return f"{m:.3g} ± {row.std[key]:.2g}"
    if key == "gus" and "gus_se" in row.mean:  # one seed: the standard error of the mean over poisons
        return f"{m:.3g} ± {row.mean['gus_se']:.2g}"
    return f"{m:.3g}"


def verdict_cell(row: Row) -> str:
    if row.n == 0:
        return "no feasible trial"
    if row.name in ("no unlearning", "retrain"):
        return "reference"
    return f"removed in {row.removed}/{row.n}" if row.n > 1 else ("removed" if row.removed else "not removed")


def markdown(rows: Sequence[Row], n_seeds: int) -> str:
    spread = ("± std over seeds" if n_seeds > 1
              else "GUS ± its standard error over poisons" if any("gus" in r.mean for r in rows) else "")
    cols = _columns(rows)
    head = ["method", *(title for _, title in cols), "poison removed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([r.name, *(_cell(r, k) for k, _ in cols), verdict_cell(r)]) + " |")
    note = f"{n_seeds} seed{'s' if n_seeds > 1 else ''}" + (f"; {spread}" if spread else "")
    return "\n".join(lines) + f"\n\n({note})\n"


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
    head = ["method", "n_seeds", "removed", *keys, *(f"{k}_std" for k in keys)]
    out = [",".join(head)]
    for r in rows:
        vals = [r.name, str(r.n), str(r.removed)]
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
