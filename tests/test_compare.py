"""compare: the table equals the underlying runs' metrics; a second compare reuses the finished studies."""

from __future__ import annotations

import math

import mlflow
import optuna
import pytest
from mlflow.tracking import MlflowClient

from unlearn_search import cli, report, verdict
from unlearn_search.errors import UsageError

ARGS = ["compare", "--methods", "gd,ga", "--stop", "fixed",
        "--n-trials", "2", "--train-epochs", "3", "--storage", "j.log", "--seeds", "1"]


def test_table_matches_trial_runs_and_second_compare_reuses_studies(mlflow_store, capsys):
    assert cli.main(ARGS) == 0
    out = capsys.readouterr().out
    assert "| no unlearning |" in out and "| gd |" in out and "| retrain |" in out
    (parent,) = mlflow.search_runs(search_all_experiments=True, filter_string="tags.entry_point = 'compare'")[
        "run_id"]
    client = MlflowClient()
    arts = {a.path for a in client.list_artifacts(parent)} | {a.path for a in client.list_artifacts(parent, "plots")}
    assert {"comparison.md", "comparison.csv", "plots/removal_by_budget.png", "plots/dashboard.html",
            "plots/gus_vs_mia.png", "plots/accuracy_vs_removal.png"} <= arts
    assert not any(a.endswith(".html") and a != "plots/dashboard.html" for a in arts)  # one page, not one per figure
    page = mlflow.artifacts.load_text(f"runs:/{parent}/plots/dashboard.html")
    assert "<script src=\"http" not in page and page.count("* plotly.js v") == 1  # inlined once: works offline
    for figure in ("removal_by_seed", "removal_by_budget", "gus_vs_mia", "accuracy_vs_removal", "search_progress"):
        assert f'id="fig-{figure}"' in page, figure
    assert len(page) < 6_000_000
    compare_run = client.get_run(parent)
    # the Overview shows the answer: headline sentence and table as the run's description; the URL is printed
    description = compare_run.data.tags["mlflow.note.content"]
    assert description.startswith("gaussian poisoning, on 1 seed: ") and "| no unlearning |" in description
    assert f"#/experiments/{compare_run.info.experiment_id}/runs/{parent}" in out
    rows = row_runs(client, compare_run)
    assert list(rows) == ["no unlearning", "gd", "ga", "retrain"]
    checked = 0
    for method in ("gd", "ga"):
        tune_runs = client.search_runs([compare_run.info.experiment_id], (
            f"tags.mlflow.parentRunId = '{parent}' and tags.method = '{method}' and tags.kind = 'tune'"))
        assert len(tune_runs) == 1
        tune = tune_runs[0]
        assert tune.info.run_name == f"{method} / seed 0"
        metrics = rows[method].data.metrics
        if "best_trial" not in tune.data.tags:
            assert "removal" not in metrics  # no feasible trial: no row values
            continue
        trials = trial_runs(client, tune)
        assert len(trials) == 2 and all(t.data.tags["method"] == method for t in trials)
        (trial,) = [t for t in trials if t.data.tags["trial"] == tune.data.tags["best_trial"]]
        assert trial.info.run_name == f"{method} / seed 0 / trial {tune.data.tags['best_trial']}"
        assert trial.data.metrics["feasible"] == 1.0
        for key in ("removal", "test_acc", "gus_z", "gus_tpr_at_1fpr", "mia_tpr_at_1fpr", "budget_used"):
            # one name per quantity: the row, the tune run and the trial say ``removal`` alike
            assert metrics[key] == pytest.approx(trial.data.metrics[key], rel=1e-9), (method, key)
            assert tune.data.metrics[key] == trial.data.metrics[key], (method, key)
        checked += 1
    assert checked >= 1, "no method had a feasible trial: the table check did not run"
    poisoned = client.get_run(mlflow.search_runs(search_all_experiments=True, filter_string=(
        "tags.role = 'poisoned'"))["run_id"][0]).data.metrics
    # the reference rows are judged on the verdict part of the poisons, like the methods: what each tune run logs
    # as poisoned.*; the registered poisoned model's gus_z is over all poisons, a larger sample of the same signal
    tune = client.search_runs([compare_run.info.experiment_id], "tags.entry_point = 'tune'")[0]
    assert rows["no unlearning"].data.metrics["gus_z"] == pytest.approx(tune.data.metrics["poisoned.gus_z"])
    assert 0 < rows["no unlearning"].data.metrics["gus_z"] < poisoned["gus_z"]
    assert rows["retrain"].data.metrics["removal"] == 1.0

    # again: every study already has its trials, so none is run and no new model version is registered
    n_versions = len(client.search_model_versions("name = 'unlearn_search.unlearned.gd'"))
    assert cli.main(ARGS) == 0
    second = mlflow.search_runs(search_all_experiments=True, filter_string=(
        "tags.entry_point = 'tune' and tags.new_trials = '0'"))
    assert len(second) == 2
    assert len(client.search_model_versions("name = 'unlearn_search.unlearned.gd'")) == n_versions


def row_runs(client: MlflowClient, compare_run) -> dict:
    """The compare run's row runs (one per table row), by row name, in table order."""
    rows = client.search_runs([compare_run.info.experiment_id],
                              f"tags.compare_run = '{compare_run.info.run_id}' and tags.kind = 'row'")
    assert all(r.info.run_name.startswith(r.data.tags["method"]) for r in rows)
    assert all("mlflow.parentRunId" not in r.data.tags for r in rows)  # top level: charts see them unexpanded
    return {r.data.tags["method"]: r for r in sorted(rows, key=lambda r: r.info.start_time)}


def trial_runs(client: MlflowClient, tune_run) -> list:
    """A tune run's trial runs: in the trials experiment beside its own, linked by the tag ``tune_run``."""
    name = client.get_experiment(tune_run.info.experiment_id).name + " trials"
    exp = client.get_experiment_by_name(name)
    return client.search_runs([exp.experiment_id], f"tags.tune_run = '{tune_run.info.run_id}'")


def _seed(removal, z, answer, residue=0.0, se=0.02, margin=0.08, improving=0.0):
    """One seed's best-trial metrics as `Yardstick.judge` logs them (GUS: the residue is mean I_z)."""
    from scipy import stats

    return {"removal": removal, "residual_z": z, "removal_pvalue": float(2 * stats.norm.sf(abs(z))),
            "verdict_code": verdict.CODES[answer], "poison_removed": float(answer == verdict.REMOVED),
            "equivalence_pvalue": 0.5, "residue": residue, "residue_se": se, "residue_raw": residue,
            "residue_raw_se": 0.06, "equiv_upper": residue - margin, "equiv_upper_se": se,
            "equiv_lower": residue + margin, "equiv_lower_se": se, "equivalence_margin_abs": margin,
            "search_still_improving": improving}


def test_aggregate_over_seeds_by_hand():
    per_seed = [
        {"a": _seed(0.2, 3.0, verdict.NOT_REMOVED), "b": None},
        {"a": _seed(0.4, 0.5, verdict.INCONCLUSIVE), "b": _seed(0.9, 0.1, verdict.REMOVED)},
    ]
    a, b = report.aggregate(per_seed, ["a", "b"])
    assert a.mean["removal"] == pytest.approx(0.3) and a.std["removal"] == pytest.approx(math.sqrt(0.02))
    assert (a.n, a.removed, a.missing) == (2, 0, 0) and a.disagree
    assert a.answers == {verdict.NOT_REMOVED: 1, verdict.INCONCLUSIVE: 1}
    assert (b.n, b.removed, b.missing) == (1, 1, 1) and "removal" not in b.std
    assert b.answer != verdict.REMOVED  # a seed without a feasible trial forbids "removed"
    assert "per seed: 1 not removed, 1 inconclusive" in report.verdict_cell(a)


def test_verdict_over_seeds_by_hand():
    """Per-seed best trials -> the removal's t-interval, the combined (chi-square + Stouffer) residual test, pooled
    equivalence, Holm and the search flag."""
    from scipy import stats

    z = [3.0, 1.0, 0.5]  # the verdict part's z of each seed's best trial
    per_seed = [{"m": _seed(r, zi, verdict.NOT_REMOVED if zi > 1.96 else verdict.INCONCLUSIVE, residue=0.1,
                            improving=float(i == 2))}
                for i, (r, zi) in enumerate(zip([0.4, 0.8, 0.9], z, strict=True))]
    (row,) = report.aggregate(per_seed, ["m"])
    half = stats.t.ppf(0.975, 2) * stats.sem([0.4, 0.8, 0.9])
    assert row.ci == (pytest.approx(0.7 - half), pytest.approx(0.7 + half))
    p_chi2 = stats.chi2.sf(sum(x * x for x in z), 3)
    p_st = 2 * stats.norm.sf(sum(z) / math.sqrt(3))
    assert row.combined_pvalue == pytest.approx(2 * min(p_chi2, p_st))
    assert row.residual_holm == row.combined_pvalue  # one method: Holm changes nothing
    assert row.answer == verdict.NOT_REMOVED and row.disagree and row.improving == 1
    cell = report.verdict_cell(row)
    assert cell.startswith(f"not removed (residual p Holm = {row.combined_pvalue:.2g}); per seed: 1 not removed, "
                           "2 inconclusive")
    assert report.search_cell(row) == "still improving in 1 of 3 seeds: run more trials"
    md = report.markdown([row], 3)
    assert "| m | 0.7 [" in md and "mean [95% t-interval] over seeds" in md
    # residues well inside the margin in every seed, no residual evidence: pooled equivalence says "removed"
    near = [{"m": _seed(1.0, zi, verdict.INCONCLUSIVE, residue=0.0)} for zi in (0.2, -0.3, 0.1)]
    (row,) = report.aggregate(near, ["m"])
    pooled_se = 0.02 / math.sqrt(3)
    assert row.equivalence_pvalue == pytest.approx(stats.norm.cdf(-0.08 / pooled_se))
    assert row.answer == verdict.REMOVED and report.verdict_cell(row).startswith("removed (equivalence p Holm")
    # ... but not when a seed lacks a feasible trial
    (row,) = report.aggregate([*near[1:], {"m": None}], ["m"])
    assert row.answer == verdict.INCONCLUSIVE and "no feasible trial in 1" in report.verdict_cell(row)


@pytest.mark.parametrize("history, improving", [
    ([0.1, 0.5, 0.3, 0.2, 0.4], False),  # best at trial 1 of 5
    ([0.1, 0.2, 0.3, 0.4, 0.5], True),  # best in the last trial
    ([float("nan")] * 3, False),  # no feasible trial: nothing to improve on
    ([0.1] * 8 + [0.2, 0.6], True),  # 10 trials: the last 2 are the last fifth
    ([0.1] * 7 + [0.6, 0.2, 0.3], False),
    ([0.6, 0.6, 0.6, 0.6, 0.6], False),  # ties: the first to reach the best counts
])
def test_still_improving_by_hand(history, improving):
    assert report.still_improving(history) is improving


def test_best_at_levels():
    """At each level, the trial the search would pick there (highest objective on the selection part), reported
    with its verdict-part removal: an overshoot is not the best case."""
    feas = [{"removal": 0.1, "objective": -0.9, "budget_used": 0.01},
            {"removal": 0.5, "objective": -0.45, "budget_used": 0.05},
            {"removal": 0.3, "objective": -0.7, "budget_used": 0.03},
            {"removal": 1.9, "objective": -0.95, "budget_used": 0.04}]
    got = report.best_at_levels(feas, [0.005, 0.02, 0.04, 0.1])
    assert math.isnan(got[0]) and got[1:] == [0.1, 0.3, 0.5]


@pytest.mark.parametrize("text, needle", [("gd,magic", "unknown method 'magic'"), ("none", "reference row")])
def test_bad_methods(text, needle):
    from unlearn_search.compare import parse_methods

    with pytest.raises(UsageError, match=needle):
        parse_methods(text)


def test_compare_tabulates_attacks_side_by_side(mlflow_store, capsys):
    args = ["compare", "--attacks", "gaussian,backdoor", "--methods", "gd", "--stop", "fixed",
            "--n-trials", "2", "--train-epochs", "3",
            "--storage", "j.log", "--utility-tolerance", "1", "--seeds", "1"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "| method | gaussian: GUS z | gaussian: removal | gaussian: poison removed | backdoor: backdoor ASR |" in out
    (top,) = mlflow.search_runs(search_all_experiments=True,
                                filter_string="tags.entry_point = 'compare_attacks'")["run_id"]
    per_attack = mlflow.search_runs(search_all_experiments=True, filter_string=(
        f"tags.mlflow.parentRunId = '{top}' and tags.entry_point = 'compare'"))
    assert sorted(per_attack["tags.attack"]) == ["backdoor", "gaussian"]
    client = MlflowClient()
    arts = {a.path for a in client.list_artifacts(top)} | {a.path for a in client.list_artifacts(top, "plots")}
    assert {"comparison_attacks.md", "plots/removal_by_attack.png", "plots/dashboard.html"} <= arts
    # each attack's cells are that attack's own comparison run's metrics
    md = mlflow.artifacts.load_text(f"runs:/{top}/comparison_attacks.md")
    for run_id, attack in zip(per_attack["run_id"], per_attack["tags.attack"], strict=True):
        m = row_runs(client, client.get_run(run_id))["no unlearning"].data.metrics
        key = "gus_z" if attack == "gaussian" else "backdoor_asr"
        assert f"{m[key]:.3g}" in md.splitlines()[2]  # the "no unlearning" row
    assert "gaussian poisoning, on 1 seed" in client.get_run(top).data.tags["mlflow.note.content"]


def test_side_by_side_by_hand():
    g = [report.Row("no unlearning", 1, {"gus_z": 6.0, "removal": 0.0}),
         report.Row("gd", 1, {"gus_z": 3.0, "removal": 0.5}, answer=verdict.NOT_REMOVED, residual_holm=0.0027)]
    b = [report.Row("no unlearning", 1, {"backdoor_asr": 0.9, "removal": 0.0}), report.Row("gd", 0)]
    md = report.side_by_side({"gaussian": g, "backdoor": b}, {"gaussian": "gus_z", "backdoor": "backdoor_asr"}, 1)
    lines = md.splitlines()
    assert lines[0] == ("| method | gaussian: GUS z | gaussian: removal | gaussian: poison removed | "
                        "backdoor: backdoor ASR | backdoor: removal | backdoor: poison removed |")
    assert lines[2] == "| no unlearning | 6 | 0 | reference | 0.9 | 0 | reference |"
    assert lines[3] == "| gd | 3 | 0.5 | not removed (residual p Holm = 0.0027) | – | – | no feasible trial |"


@pytest.mark.parametrize("text, needle", [("gaussian,nope", "unknown attack 'nope'"),
                                          ("backdoor,backdoor", "names an attack twice")])
def test_bad_attacks(text, needle):
    from unlearn_search.compare import parse_attacks

    with pytest.raises(UsageError, match=needle):
        parse_attacks(text, "gaussian")


def test_footer_mentions_gus_only_where_there_is_gus():
    rows = [report.Row("no unlearning", 1, {"backdoor_asr": 0.9, "removal": 0.0})]
    assert "(every column on the verdict part of the units, which the search never saw; 1 seed; poison removed: " \
        in report.markdown(rows, 1)
    rows = [report.Row("no unlearning", 1, {"gus": 0.4, "gus_se": 0.05, "removal": 0.0})]
    assert "; 1 seed; GUS ± its standard error over the verdict part's poisons; poison removed: " \
        in report.markdown(rows, 1)


def test_an_attack_that_cannot_work_on_the_model_is_refused_before_anything_runs(mlflow_store, capsys, cli_exit):
    """gradient_canceling needs the convex linear victim: asking for it beside gaussian on the MLP fails up front,
    not after the gaussian comparison has run."""
    from pathlib import Path

    code = cli_exit(["compare", "--attacks", "gaussian,gradient_canceling", "--methods", "gd", "--storage", "j.log"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "gradient_canceling needs a convex victim; model 'mlp' is not one (valid: linear)" in err
    assert not Path("mlflow.db").exists() and not Path("j.log").exists()


def test_compare_over_seeds_combines_each_seeds_best_trial(mlflow_store, capsys):
    """Two seeds, each a full scenario: the combined verdict and interval are computed from the two seeds' own best
    trials as logged by their tune runs; the spread and search-progress plots and the per-seed table are logged."""
    from scipy import stats

    from unlearn_search import verdict

    args = ["compare", "--methods", "gd", "--stop", "fixed", "--n-trials", "3", "--train-epochs", "3",
            "--storage", "j.log",
            "--seeds", "2", "--utility-tolerance", "1"]
    assert cli.main(args) == 0
    (parent,) = mlflow.search_runs(search_all_experiments=True, filter_string="tags.entry_point = 'compare'")[
        "run_id"]
    client = MlflowClient()
    run = client.get_run(parent)
    assert len(set(run.data.tags["scenario_hashes"].split(","))) == 2
    arts = {a.path for a in client.list_artifacts(parent)} | {a.path for a in client.list_artifacts(parent, "plots")}
    assert {"comparison_per_seed.csv", "plots/removal_by_seed.png", "plots/search_progress.png",
            "plots/dashboard.html"} <= arts
    tunes = client.search_runs([run.info.experiment_id],
                               f"tags.mlflow.parentRunId = '{parent}' and tags.entry_point = 'tune'")
    assert len(tunes) == 2 and {t.data.params["seed"] for t in tunes} == {"0", "1"}
    assert {t.info.run_name for t in tunes} == {"gd / seed 0", "gd / seed 1"}
    best = [t.data.metrics for t in sorted(tunes, key=lambda t: t.data.params["seed"])]
    z = [b["residual_z"] for b in best]  # each seed's verdict-part z, exactly N(0, 1) without the poison
    m = row_runs(client, run)["gd"].data.metrics
    expected = min(1.0, 2 * min(stats.chi2.sf(sum(x * x for x in z), 2), 2 * stats.norm.sf(abs(sum(z)) / math.sqrt(2))))
    assert m["combined_neg_log10_p"] == pytest.approx(-math.log10(expected), rel=1e-6)
    assert m["combined_poison_removed"] == float(m["verdict_code"] == verdict.CODES[verdict.REMOVED])
    assert m["verdict_code"] in verdict.CODES.values()  # the answer over seeds, not a mean of per-seed codes
    # no mean over seeds of per-seed answers or p-values, which would read as a verdict they are not
    assert not {"poison_removed", "removal_pvalue", "combined_pvalue"} & set(m)  # equivalence_pvalue: combined
    assert m["seeds_removed_fraction"] == m["removed_seeds"] / 2
    gd_tags = row_runs(client, run)["gd"].data.tags
    note = gd_tags["mlflow.note.content"]  # the verdict in words, and the way to the comparison
    assert note.startswith(f"**gd** (gaussian poisoning, 2 seed(s)): {gd_tags['verdict']}. Search: "), note
    assert f"#/experiments/{run.info.experiment_id}/runs/{parent}" in note
    mean, lo, hi = verdict.mean_ci([b["removal"] for b in best])
    assert (m["removal"], m["removal_ci_low"], m["removal_ci_high"], m["seeds"]) == (
        pytest.approx(mean), pytest.approx(lo), pytest.approx(hi), 2.0)
    assert run.data.tags["mlflow.note.content"].startswith("gaussian poisoning, over 2 seeds: ")
    per_seed = mlflow.artifacts.load_text(f"runs:/{parent}/comparison_per_seed.csv").splitlines()
    assert per_seed[0].startswith("seed,method,") and len(per_seed) == 1 + 2 * 3  # 2 seeds x (none, gd, retrain)
    table = mlflow.artifacts.load_text(f"runs:/{parent}/comparison.csv").splitlines()
    for line in per_seed[1:] + table[1:]:  # numbers at 4 significant figures, as the tables show them
        for cell in line.split(",")[2:]:
            try:
                value = float(cell)
            except ValueError:  # a word (the answer) or empty
                continue
            assert cell == f"{value:.4g}", line
    assert "removal_pvalue" not in table[0].split(",")  # a mean of per-seed p-values is not written anywhere
    assert "2 seeds, each a full scenario" in capsys.readouterr().out
    # the registry: each seed's tuned best under its scenario's alias and under seed<n>; @best is the one the verdict
    # is about, the best over seeds by the search's objective
    name = "unlearn_search.unlearned.gd"
    by_seed = {}
    for t in tunes:
        mv = client.get_model_version_by_alias(name, f"best-{t.data.tags['scenario_hash'][:8]}")
        assert mv.tags["scenario_hash"] == t.data.tags["scenario_hash"]
        assert client.get_model_version_by_alias(name, f"seed{t.data.params['seed']}").version == mv.version
        by_seed[mv.version] = (t.data.metrics["objective"], -int(t.data.params["seed"]))  # ties: the lower seed
    assert client.get_model_version_by_alias(name, "best").version == max(by_seed, key=by_seed.__getitem__)


@pytest.mark.parametrize("preset, expected", [("default", 3), ("paper-small", 3), ("paper", 8)])
def test_compare_runs_the_presets_number_of_seeds_by_default(monkeypatch, preset, expected):
    from unlearn_search import compare

    seen: list[int] = []
    monkeypatch.setattr(compare, "run_compare_attacks", lambda methods, bases, seeds, *a, **k: seen.append(seeds))
    monkeypatch.setattr("unlearn_search.search.connect_storage", lambda url: None)
    from unlearn_search import data

    digits = data.load_dataset("digits")
    monkeypatch.setattr(data, "load_dataset", lambda name, *a, **k: digits)  # no CIFAR-10 here
    assert cli.main(["compare", "--preset", preset]) == 0
    assert cli.main(["compare", "--preset", preset, "--seeds", "2"]) == 0  # an explicit value wins
    assert seen == [expected, 2]


def test_seeds_below_one_are_one_line_and_write_nothing(mlflow_store, capsys, cli_exit):
    from pathlib import Path

    assert cli_exit(["compare", "--seeds", "0", "--storage", "j.log"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: seeds=0 is out of range; valid: [1, inf)"
    assert not Path("mlflow.db").exists() and not Path("j.log").exists()


def test_scenarios_built_under_one_run_keep_their_own_poisons(mlflow_store, monkeypatch):
    """compare builds one scenario per seed under its own run. Each scenario must keep its own poisons: logged into
    the compare run itself, seed 1's overwrote seed 0's, and found again (from the store or the process cache) seed 1
    was scored against seed 0's noise (every method then 'removed' the poison)."""
    import torch

    from unlearn_search import store, tracking
    from unlearn_search.context import RunContext
    from unlearn_search.scenario import ScenarioConfig
    from unlearn_search.training import TrainConfig

    cfgs = [ScenarioConfig(train=TrainConfig(epochs=2), seed=s) for s in (0, 1)]
    tracking.configure(None)
    with tracking.run("compare-like"):
        built = [store.ensure_references(c, RunContext(c.seed)) for c in cfgs]
        cached = [store.find_references(c, RunContext(c.seed)) for c in cfgs]  # the process cache
    monkeypatch.setattr(store, "_CACHE", type(store._CACHE)())
    stored = [store.find_references(c, RunContext(c.seed)) for c in cfgs]  # the tracking store
    assert built[0].scenario_run_id != built[1].scenario_run_id
    for b, c, s in zip(built, cached, stored, strict=True):
        for found in (c, s):
            assert found is not None
            assert torch.equal(found.scenario.poisoning.x_poison, b.scenario.poisoning.x_poison)
            assert torch.equal(found.scenario.poisoning.indices, b.scenario.poisoning.indices)


def test_compare_gathers_studies_filled_by_running_workers(mlflow_store, tmp_path, capsys):
    """A tune worker started elsewhere (same scenario options, its seed and method, the shared storage) fills the
    study; compare --wait-for-workers waits for it, runs no trial itself, and tabulates the worker's trials."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    worker = subprocess.Popen([sys.executable, "-m", "unlearn_search", "-q", "tune", "--method", "gd", "--n-trials",
                               "3", "--train-epochs", "3", "--storage", "j.log", "--utility-tolerance", "1"],
                              cwd=os.getcwd(), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert cli.main(["compare", "--methods", "gd", "--stop", "fixed",
                         "--n-trials", "3", "--train-epochs", "3", "--storage", "j.log",
                         "--seeds", "1", "--utility-tolerance", "1", "--wait-for-workers", "300"]) == 0
    finally:
        _, err = worker.communicate(timeout=300)
    assert worker.returncode == 0, err[-2000:]
    (tune_run,) = [r for r in MlflowClient().search_runs(
        [e.experiment_id for e in MlflowClient().search_experiments()], "tags.kind = 'tune'")
        if "mlflow.parentRunId" in r.data.tags]  # the compare's, not the worker's own
    assert tune_run.data.tags["new_trials"] == "0" and tune_run.data.tags["reused_trials"] == "3"
    from unlearn_search.search import connect_storage

    (study,) = optuna.get_all_study_summaries(connect_storage("j.log"))
    assert study.n_trials == 3


def test_wait_for_workers_must_not_be_negative(mlflow_store, capsys):
    assert cli.main(["compare", "--methods", "gd", "--wait-for-workers", "-1"]) == 2
    assert "wait_for_workers=-1" in capsys.readouterr().err
