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
    ("ulira_retrain_auc", "U-LiRA null AUC (retrained)"),  # its null check: the retrained model, the same fits
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
    removed: int = 0  # seeds whose own answer is "removed"
    missing: int = 0  # seeds without a feasible trial
    values: dict[str, list[float]] = field(default_factory=dict)  # per seed with a value, in seed order
    ci: tuple[float, float] = (math.nan, math.nan)  # 95% interval of the mean removal over seeds
    combined_pvalue: float = math.nan  # the seeds' residual tests combined (`verdict.combined_pvalue`)
    equivalence_pvalue: float = math.nan  # the seeds' equivalence tests combined (`verdict.combined_equivalence`)
    residual_holm: float = math.nan  # combined_pvalue, Holm-adjusted across the methods of the comparison
    equivalence_holm: float = math.nan  # equivalence_pvalue, Holm-adjusted likewise
    answer: str | None = None  # the verdict over seeds (None for the reference rows)
    answers: dict[str, int] = field(default_factory=dict)  # per-seed answers, counted
    needed: float = math.nan  # inconclusive: about how many times the verdict units (or seeds) would decide it
    weak: int = 0  # seeds where the attack was too weak to judge
    improving: int = 0  # seeds whose search was still improving at its end
    combination: str = "chi2_stouffer"  # how the seeds' residual tests were combined

    @property
    def combined_removed(self) -> bool | None:
        return None if self.answer is None else self.answer == verdict.REMOVED

    @property
    def disagree(self) -> bool:
        return len([k for k, v in self.answers.items() if v]) > 1


def answer_of(metrics: Mapping[str, float]) -> str:
    """One seed's answer from its logged ``verdict_code`` (`verdict.CODES`)."""
    code = metrics.get("verdict_code", math.nan)
    if not math.isfinite(code):
        return verdict.TOO_WEAK
    return next(a for a, c in verdict.CODES.items() if c == code)


def answer_reason(m: Mapping[str, float], answer: str, margin: float) -> str:
    """Why, in words: the test that decided, or what would decide an inconclusive answer."""
    if answer == verdict.NOT_REMOVED:
        return f"the residual test rejects (p = {m.get('removal_pvalue', math.nan):.2g})"
    if answer == verdict.REMOVED:
        return (f"equivalence shown: the residue is within ±{margin:g} × the poisoned model's "
                f"(TOST p = {m.get('equivalence_pvalue', math.nan):.2g})")
    if answer == verdict.INCONCLUSIVE:
        return (f"neither the residual test (p = {m.get('removal_pvalue', math.nan):.2g}) nor equivalence within "
                f"±{margin:g} × the poisoned residue (p = {m.get('equivalence_pvalue', math.nan):.2g}) decides; "
                + _needed_words(m.get("needed_factor", math.nan), seeds=False))
    if answer == verdict.UTILITY_LOST:
        return "test accuracy fell below the tolerance"
    return "the poisoned model's residue is not detected on the verdict part"


def _needed_words(factor: float, seeds: bool) -> str:
    if not math.isfinite(factor):
        return "no amount of data would decide it at this residue (it sits at the margin)"
    what = "the verdict units or the seeds" if seeds else "the verdict units (poisons, or seeds over a comparison)"
    return f"about {max(factor, 1.0):.2g}× {what} would decide it"


def _combine(row: Row, present: Sequence[Mapping[str, float]]) -> None:
    """The seeds' verdict-part tests combined (before Holm's correction across methods)."""
    judged = [v for v in present if not v.get("attack_too_weak", 0.0)]
    row.weak = len(present) - len(judged)
    if not judged:
        return
    if row.combination == "chi2_stouffer" and all(math.isfinite(v.get("residual_z", math.nan)) for v in judged):
        row.combined_pvalue = verdict.combined_pvalue([v["residual_z"] for v in judged], "chi2_stouffer")
    else:
        row.combined_pvalue = verdict.combined_pvalue([v["removal_pvalue"] for v in judged], "fisher")
    est = verdict.Estimate
    uppers = [est(v["equiv_upper"], v["equiv_upper_se"], math.inf) for v in judged]
    lowers = [est(v["equiv_lower"], v["equiv_lower_se"], math.inf) if "equiv_lower" in v else None for v in judged]
    residues = [est(v["residue"], v["residue_se"], math.inf) for v in judged]
    if len(judged) == 1:  # one seed: its own (t-based) equivalence test
        row.equivalence_pvalue = judged[0]["equivalence_pvalue"]
    else:
        row.equivalence_pvalue = verdict.combined_equivalence(uppers, lowers, residues)
    res, raw = verdict.pooled(residues), verdict.pooled(
        [est(v["residue_raw"], v["residue_raw_se"], math.inf) for v in judged])
    margin = float(np.mean([abs(v["equivalence_margin_abs"]) for v in judged]))
    row.needed = verdict.needed_factor(res.value, res.se, margin, raw.value, raw.se,
                                       two_sided=lowers[0] is not None)


def aggregate(
    per_seed: Sequence[dict[str, dict[str, float] | None]],
    order: Sequence[str],
    combination: str = "chi2_stouffer",
) -> list[Row]:
    """Rows over seeds: means and standard deviations, the removal's 95% interval, the per-seed answers and the
    answer over seeds: the seeds' residual and equivalence tests combined, then Holm-adjusted across the method
    rows (`verdict.holm`), then `verdict.decide`. A seed without a feasible trial forbids "removed"."""
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
        row.improving = sum(int(v.get("search_still_improving", 0.0) >= 0.5) for v in present)
        if "removal" in row.values and name not in REFERENCE_ROWS:
            _, lo, hi = verdict.mean_ci(row.values["removal"])
            row.ci = (lo, hi)
        if name not in REFERENCE_ROWS and present and all("verdict_code" in v for v in present):
            for v in present:
                a = answer_of(v)
                row.answers[a] = row.answers.get(a, 0) + 1
            row.removed = row.answers.get(verdict.REMOVED, 0)
            _combine(row, present)
        rows.append(row)
    tested = [r for r in rows if r.name not in REFERENCE_ROWS and r.answers]
    for r, p_res, p_eq in zip(tested, verdict.holm([r.combined_pvalue for r in tested]),
                              verdict.holm([r.equivalence_pvalue for r in tested]), strict=True):
        r.residual_holm, r.equivalence_holm = p_res, p_eq
        r.answer = verdict.decide(p_res if math.isfinite(p_res) else 1.0, p_eq if math.isfinite(p_eq) else 1.0,
                                  too_weak=r.weak == r.n)
        if r.answer == verdict.REMOVED and r.missing:
            r.answer = verdict.INCONCLUSIVE  # utility was lost in a seed: not removed there at any setting
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
    """The comparison's answer in one sentence: which methods' best cases removed the poison, which did not, which
    the data cannot decide, and the best mean removal found; with LiRA (``lira_shadows``), which methods' best
    models it still sees as members."""
    methods = [r for r in rows if r.name not in REFERENCE_ROWS]
    over = f"over {n_seeds} seeds" if n_seeds > 1 else "on 1 seed"
    if not methods:
        return f"{attack} poisoning, {over}: no method compared."
    groups: dict[str, list[str]] = {}
    for r in methods:
        groups.setdefault(r.answer or ("no feasible trial" if r.n == 0 else verdict.INCONCLUSIVE), []).append(r.name)
    if groups.get(verdict.TOO_WEAK) and len(groups[verdict.TOO_WEAK]) == len(methods):
        return f"{attack} poisoning, {over}: {verdict.TOO_WEAK} (the poisoned model's residue is not detected)."
    parts = []
    if groups.get(verdict.REMOVED):
        parts.append(f"{', '.join(groups[verdict.REMOVED])} removed the poison (equivalence shown)")
    if groups.get(verdict.NOT_REMOVED):
        nr = groups[verdict.NOT_REMOVED]
        parts.append("none of the methods removed the poison, even at its best case" if len(nr) == len(methods)
                     else f"{', '.join(nr)} did not remove it")
    if groups.get(verdict.INCONCLUSIVE):
        parts.append(f"{', '.join(groups[verdict.INCONCLUSIVE])}: inconclusive (more data needed)")
    for other in ("no feasible trial", verdict.TOO_WEAK):
        if groups.get(other):
            parts.append(f"{', '.join(groups[other])}: {other}")
    scored = [r for r in methods if "removal" in r.mean]
    best = max(scored, key=lambda r: -abs(1 - r.mean["removal"]), default=None)
    top = (f" Closest to retraining on mean removal: {best.name}, {_cell(best, 'removal')} (0 = no unlearning, "
           "1 = retraining)." if best is not None else "")
    return f"{attack} poisoning, {over}: {'; '.join(parts)}.{top}{_lira_sentence(rows) if lira_shadows else ''}"


#: LiRA's null check: a model that never saw the poisons must give AUC 0.5; a retrained model further than this from
#: it flags the scenario's LiRA numbers (`null_check`).
NULL_AUC_TOLERANCE = 0.05


def null_check(retrain_auc: float) -> str:
    """The retrained model's LiRA AUC beside every LiRA number, in words, flagged when |AUC - 0.5| >
    `NULL_AUC_TOLERANCE` (its null is then off on this scenario and its numbers are not to be read as rates)."""
    if not math.isfinite(retrain_auc):
        return "null check: no retrained model's AUC"
    flag = abs(retrain_auc - 0.5) > NULL_AUC_TOLERANCE
    return (f"null check: the retrained model's AUC {retrain_auc:.2f}"
            + (f" (NOT within 0.5 ± {NULL_AUC_TOLERANCE:g}: LiRA's null is off here, do not read its rates)"
               if flag else f" (within 0.5 ± {NULL_AUC_TOLERANCE:g})"))


def lira_power(poisoned_tpr: float, retrain_tpr: float) -> str:
    """A warning, or "": LiRA has no power on a scenario where even the poisoned model is not flagged above twice the
    retrained model's rate at 1% FPR (at least 2%), and then a method "at the retrained model's level" says nothing."""
    if math.isfinite(poisoned_tpr) and poisoned_tpr > 2 * max(retrain_tpr, 0.01):
        return ""
    return (f"; LiRA has no power here: it flags the poisoned model's poisons at {poisoned_tpr:.3f}, not above "
            f"twice the retrained model's rate, so a method at the retrained level says nothing (more shadows or "
            f"poisons may help)")


def _lira_sentence(rows: Sequence[Row]) -> str:
    """LiRA's view, in words: the references' TPR at 1% FPR and the methods still above twice the retrained one's."""
    lira = {r.name: r.mean.get("lira_tpr_at_1fpr", float("nan")) for r in rows}
    floor = 2 * max(lira.get("retrain", float("nan")), 0.01)
    still = [n for n, v in lira.items() if n not in REFERENCE_ROWS and v > floor]
    retrain_auc = next((r.mean.get("lira_auc", float("nan")) for r in rows if r.name == "retrain"), float("nan"))
    return (f" LiRA at 1% FPR (mean over seeds): poisoned {lira.get('no unlearning', float('nan')):.2f}, retrained "
            f"{lira.get('retrain', float('nan')):.2f}; "
            + (f"still above twice the retrained model's for {', '.join(still)}" if still else
               "no method's best model above twice the retrained model's")
            + lira_power(lira.get("no unlearning", float("nan")), lira.get("retrain", float("nan")))
            + f" ({null_check(retrain_auc)}).")


def verdict_cell(row: Row) -> str:
    """The answer in words, with the test that decided it (Holm-adjusted over the comparison's methods) and the
    per-seed answers when there are several seeds."""
    if row.n == 0:
        return "no feasible trial"
    if row.name in REFERENCE_ROWS:
        return "reference"
    if row.answer is None:
        return "–"
    holm = " Holm"
    if row.answer == verdict.NOT_REMOVED:
        text = f"not removed (residual p{holm} = {row.residual_holm:.2g})"
    elif row.answer == verdict.REMOVED:
        text = f"removed (equivalence p{holm} = {row.equivalence_holm:.2g})"
    elif row.answer == verdict.INCONCLUSIVE:
        text = (f"inconclusive (residual p{holm} = {row.residual_holm:.2g}, equivalence p{holm} = "
                f"{row.equivalence_holm:.2g}; {_needed_words(row.needed, seeds=True)})")
    else:
        text = row.answer
    total = row.n + row.missing
    if total > 1:
        counts = ", ".join(f"{v} {k}" for k, v in row.answers.items() if v)
        text += f"; per seed: {counts}"
    if row.weak and row.answer != verdict.TOO_WEAK:
        text += f"; attack too weak to judge in {row.weak}"
    if row.missing:
        text += f"; no feasible trial in {row.missing}"
    return text


def search_cell(row: Row) -> str:
    """How the method's searches ended: with stop=settled "settled after N trials" (N, or its range over seeds) or
    "capped at N, still improving in k of n seeds"; with stop=fixed whether the best trial came in the last
    `IMPROVING_TAIL` of the trials."""
    if row.name in REFERENCE_ROWS or row.n == 0:
        return "–"
    trials = [int(t) for t in row.values.get("search_trials", [])]
    span = "" if not trials else str(trials[0]) if min(trials) == max(trials) else f"{min(trials)}-{max(trials)}"
    if "search_settled" in row.values:  # stop=settled
        capped = int(sum(row.values.get("search_capped", [])))
        open_ = row.n - int(sum(row.values["search_settled"]))
        where = "" if row.n == 1 else f" in {open_} of {row.n} seeds"
        unjudged = f"; no feasible trial in {row.missing} (no best case to settle)" if row.missing else ""
        if not open_:
            return f"settled after {span} trials{unjudged}"
        if capped == open_:
            return f"capped at {max(trials)}, still improving{where}{unjudged}"
        return f"not settled{where} (stopped early: a timeout), {span} trials: run more trials{unjudged}"
    if not row.improving:
        return "settled" if not trials else f"{span} trials (fixed), best not in the last {IMPROVING_TAIL:.0%}"
    where = "" if row.n == 1 else f" in {row.improving} of {row.n} seeds"
    return f"still improving{where}: run more trials"


def markdown(rows: Sequence[Row], n_seeds: int, keys: Sequence[str] | None = None) -> str:
    """The comparison table; ``keys``: only these metric columns (in this order), then the verdict and the search
    column (the short form a run's description and the README show)."""
    cols = _columns(rows)
    if keys is not None:
        titles = dict(cols)
        cols = [(k, titles[k]) for k in keys if k in titles]
    head = ["method", *(title for _, title in cols), "poison removed", "search"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([r.name, *(_cell(r, k) for k, _ in cols), verdict_cell(r), search_cell(r)])
                     + " |")
    note = ("every column on the verdict part of the units, which the search never saw; "
            + (f"{n_seeds} seeds, each a full scenario with its own references and search; removal: mean [95% "
               f"t-interval] over seeds; other columns: mean ± std over seeds" if n_seeds > 1 else "1 seed"
               + ("; GUS ± its standard error over the verdict part's poisons"
                  if any("gus" in r.mean for r in rows) else "")))
    note += (f"; poison removed: 'not removed' when the residual test rejects, 'removed' when equivalence within the "
             f"margin is shown, else 'inconclusive', each at level {verdict.LEVEL}, Holm-adjusted across the methods"
             + (f", the seeds combined ({verdict.COMBINATION_NAMES.get(rows[0].combination, rows[0].combination)} "
                "for the residual test, inverse-variance pooling for equivalence)" if n_seeds > 1 else ""))
    settled = any("search_settled" in r.values for r in rows)
    note += ("; search: 'settled after N trials' when the best case stopped moving (stop=settled: the patience rule "
             "of docs/tune.md), 'capped' when the cap came first" if settled else
             f"; search: 'still improving' when the best feasible trial came in the last {IMPROVING_TAIL:.0%} of the "
             "trials")
    return "\n".join(lines) + f"\n\n({note})\n"


def per_seed_csv(per_seed: Sequence[dict[str, dict[str, float] | None]], seeds: Sequence[int],
                 order: Sequence[str]) -> str:
    """One line per (seed, row): what the aggregated table is made of."""
    keys = ["budget_used", "test_acc", "removal", "removal_pvalue", "equivalence_pvalue", "verdict_code",
            "poison_removed", "search_still_improving"]
    out = [",".join(["seed", "method", *keys])]
    for seed, rows in zip(seeds, per_seed, strict=True):
        for name in order:
            m = rows.get(name)
            out.append(",".join([str(seed), name, *(num(m[k]) if m and k in m else "" for k in keys)]))
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


def num(x: Any) -> str:
    """A number as the CSVs write it: 4 significant figures (the tables' precision; not 17 digits of noise)."""
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def csv(rows: Sequence[Row]) -> str:
    """The comparison over seeds, one line per row: the combined tests and the answer, the interval, the means and
    standard deviations of the table's columns (never a mean of per-seed p-values)."""
    keys = [k for k, _ in _columns(rows)] + ["gus_se"]
    head = ["method", "n_seeds", "removed", "combined_pvalue", "equivalence_pvalue", "residual_holm",
            "equivalence_holm", "answer", "removal_ci_low", "removal_ci_high", "search_still_improving", *keys,
            *(f"{k}_std" for k in keys)]
    out = [",".join(head)]
    for r in rows:
        vals = [r.name, str(r.n), str(r.removed), num(r.combined_pvalue), num(r.equivalence_pvalue),
                num(r.residual_holm), num(r.equivalence_holm), r.answer or "", num(r.ci[0]), num(r.ci[1]),
                str(r.improving)]
        vals += [num(r.mean[k]) if k in r.mean else "" for k in keys]
        vals += [num(r.std[k]) if k in r.std else "" for k in keys]
        out.append(",".join(vals))
    return "\n".join(out) + "\n"


def best_at_levels(feasible: Sequence[dict[str, float]], levels: Sequence[float]) -> list[float]:
    """At each budget level, the verdict-part removal of the feasible trial closest to retraining on the selection
    part (highest ``objective``) among those that used at most that budget (NaN where none did): the search's
    choice at that budget, judged where it was not chosen."""
    out = []
    for level in levels:
        ok = [m for m in feasible if m["budget_used"] <= level + 1e-12 and math.isfinite(m.get("objective", math.nan))]
        out.append(max(ok, key=lambda m: m["objective"])["removal"] if ok else float("nan"))
    return out


def describe_unlearned(method: str, metrics: Mapping[str, float], refs: Mapping[str, Mapping[str, float]],
                       versions: Mapping[str, Any], key: str, origin: str, residual_test: str) -> str:
    """The Markdown description of a registered unlearned model: its verdict, its key numbers beside the two
    references', and which reference versions it was judged against."""
    answer = answer_of(metrics)
    rows = [("removal (0 = none, 1 = retrain)", "removal", 0.0, 1.0), ("test accuracy", "test_acc", None, None),
            (key, key, None, None), ("MIA TPR at 1% FPR", "mia_tpr_at_1fpr", None, None),
            ("compute used (retrain = 1)", "budget_used", 0.0, 1.0)]
    # the first line is plain text, with its numbers apart: the registry's version list shows it raw and flat
    lines = [f"{method}, {origin}: poison {answer}; removal {_g(metrics.get('removal'))} (0 = none, 1 = retrain), "
             f"test accuracy {_g(metrics.get('test_acc'))}, compute {_g(metrics.get('budget_used'))} of retraining.",
             "", f"{residual_test}: p = {metrics.get('removal_pvalue', float('nan')):.3g}; equivalence p = "
             f"{metrics.get('equivalence_pvalue', float('nan')):.3g}; on the verdict part of the units.", "",
             f"| | {method} | poisoned | retrain |", "|---|---|---|---|"]
    for title, k, p_default, r_default in rows:
        p = refs["poisoned"].get(k, p_default)
        r = refs["retrain"].get(k, r_default)
        lines.append(f"| {title} | {_g(metrics.get(k))} | {_g(p)} | {_g(r)} |")
    lines += ["", f"Judged against `{versions['poisoned']}` (poisoned) and `{versions['retrain']}` (retrain)."]
    return "\n".join(lines)


def _g(v: Any) -> str:
    return "-" if v is None or not math.isfinite(float(v)) else f"{float(v):.4g}"
