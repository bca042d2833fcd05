"""The verdict as a statistical test: each decision against a hand computation and a simulation of its error rates
(docs/statistics.md). Simulated I_z follow the facts the verdict rests on: without the poison, I_z ~ N(0, 1) exactly
per poison; models near each other have correlated I_z on the same poisons (about 0.9 between two retrainings)."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from scipy import stats

from unlearn_search import report, verdict
from unlearn_search.attacks import ATTACKS
from unlearn_search.context import RunContext
from unlearn_search.unlearning import Yardstick

RNG_SEED = 20261202


def _attack(name):
    cls = ATTACKS.get(name)
    return cls(cls.config_from({}))


def _models(rng, n, residue_poisoned=0.4, residue=0.0, rho=0.9):
    """Per-poison I_z of (poisoned, retrained reference, a model with mean I_z ``residue``): each a shift plus a
    unit-variance part correlated ``rho`` with the reference's (which has mean exactly 0)."""
    ref = rng.standard_normal(n)

    def near(mu, r):
        return mu + r * ref + math.sqrt(1 - r * r) * rng.standard_normal(n)

    return near(residue_poisoned, 0.75), ref, near(residue, rho)


def _judge(attack, poisoned, retrain, unlearned, select_fraction=0.3, seed=0, margin=0.2):
    yard = Yardstick.of(attack, poisoned, retrain, RunContext(seed=seed), select_fraction, margin)
    m = yard.judge(attack, unlearned)
    return m, verdict.decide(m["removal_pvalue"], m["equivalence_pvalue"], bool(m["attack_too_weak"]))


def test_gus_residual_test_is_two_sided_and_exact():
    gauss = _attack("gaussian")
    k = 100
    mirrored = np.full(k, -0.486)  # mean I_z * sqrt(k) = -4.86: as impossible without the poison as +4.86
    assert gauss.residual_z(mirrored) == pytest.approx(-4.86)
    assert gauss.residual_pvalue(mirrored, np.zeros(k)) == pytest.approx(2 * stats.norm.sf(4.86))
    assert gauss.residual_pvalue(-mirrored, np.zeros(k)) == pytest.approx(gauss.residual_pvalue(mirrored, np.zeros(k)))
    # its size: models that never saw the noise are rejected 5% of the time, not less (one-sided: 2.5% per side)
    rng = np.random.default_rng(RNG_SEED)
    p = np.array([gauss.residual_pvalue(rng.standard_normal(k), None) for _ in range(4000)])
    assert abs((p < 0.05).mean() - 0.05) < 3 * math.sqrt(0.05 * 0.95 / 4000)
    assert stats.kstest(p, "uniform").pvalue > 0.01


def test_success_count_attacks_stay_one_sided_fisher():
    backdoor = _attack("backdoor")
    u, r = np.array([1.0] * 5 + [0.0] * 15), np.array([1.0] * 1 + [0.0] * 19)
    assert backdoor.residual_pvalue(u, r) == pytest.approx(
        stats.fisher_exact([[5, 15], [1, 19]], alternative="greater").pvalue)
    assert backdoor.residual_pvalue(r, u) > 0.5  # fewer successes than retraining is no residue
    assert backdoor.residue.two_sided is False and backdoor.seed_combination == "fisher"


def test_bad_teacher_seeds_are_rejected_and_retrained_seeds_are_not():
    """The numbers of docs/compare.md's Bad Teacher row: Stouffer's sum cancelled them to p = 0.56."""
    bad_teacher, retrained = [-4.86, 6.04, -1.42], [0.19, 0.60, 0.99]
    assert stats.combine_pvalues(stats.norm.sf(bad_teacher), method="stouffer").pvalue > 0.5  # the old test
    p_bad = verdict.combined_pvalue(bad_teacher, "chi2_stouffer")
    chi2 = stats.chi2.sf(sum(z * z for z in bad_teacher), 3)
    assert p_bad == pytest.approx(2 * chi2) and p_bad < 1e-11
    assert verdict.combined_pvalue(retrained, "chi2_stouffer") > 0.5


def test_combined_residual_test_keeps_its_size_and_sees_a_small_residue_of_one_sign():
    rng = np.random.default_rng(RNG_SEED)
    for s in (1, 3, 8):
        p = np.array([verdict.combined_pvalue(rng.standard_normal(s), "chi2_stouffer") for _ in range(4000)])
        assert (p < 0.05).mean() <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 4000)
    # z = 1.5 in each of 8 seeds: no seed rejects alone, the combination does (the Stouffer half)
    assert verdict.combined_pvalue([1.5] * 8, "chi2_stouffer") < 0.01
    assert verdict.combined_pvalue([0.3, 0.2], "fisher") == pytest.approx(
        stats.combine_pvalues([0.3, 0.2], method="fisher").pvalue)


def test_holm_by_hand():
    assert verdict.holm([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert verdict.holm([0.5, math.nan]) == pytest.approx([0.5, math.nan], nan_ok=True)


def test_decide_orders_the_answers():
    assert verdict.decide(0.01, 0.01) == verdict.NOT_REMOVED  # a detected residue, even one within the margin
    assert verdict.decide(0.5, 0.01) == verdict.REMOVED
    assert verdict.decide(0.5, 0.5) == verdict.INCONCLUSIVE  # not rejected is not removed
    assert verdict.decide(0.5, 0.01, too_weak=True) == verdict.TOO_WEAK
    assert verdict.decide(0.5, 0.01, utility_kept=False) == verdict.UTILITY_LOST


def test_removal_is_anchored_at_the_exact_null():
    assert verdict.removal_from(0.0, 0.4) == 1.0 and verdict.removal_from(0.4, 0.4) == 0.0
    assert verdict.removal_from(-0.4, 0.4) == 2.0  # the mirrored poison: an overshoot, not a success
    assert math.isnan(verdict.removal_from(0.1, 0.0))
    assert verdict.objective(-0.4, 0.4) == verdict.objective(0.4, 0.4) == -1.0  # overshoot as far as no change


def test_control_variate_is_unbiased_and_cuts_the_noise():
    """The regression estimate of a null model's mean I_z: mean 0, about sqrt(1 - rho^2) of the plain mean's spread."""
    rng = np.random.default_rng(RNG_SEED)
    est, plain = [], []
    for _ in range(2000):
        _, ref, u = _models(rng, 150)
        est.append(verdict.GAUSSIAN_RESIDUE.estimate(u, ref).value)
        plain.append(u.mean())
    assert abs(np.mean(est)) < 3 * np.std(est) / math.sqrt(2000)
    assert np.std(est) < 0.55 * np.std(plain)


def test_equivalence_never_claims_removal_at_the_margin_more_than_five_percent():
    """A model whose residue is exactly 20% of the poisoned model's (the margin's edge) must read "removed" at most
    5% of the time (TOST's size), a null model most of the time with enough poisons."""
    rng = np.random.default_rng(RNG_SEED)
    gauss, n = _attack("gaussian"), 1500
    at_edge = []
    for i in range(600):
        p, r, _ = _models(rng, n)
        # the unlearned model sits at +margin on the true residues: 0.2 * 0.4 = 0.08 (and correlated with both)
        u = 0.2 * p + 0.8 * r
        at_edge.append(_judge(gauss, p, r, u, seed=i)[1] == verdict.REMOVED)
    assert np.mean(at_edge) <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 600)
    null = [_judge(gauss, *_models(rng, n), seed=i)[1] for i in range(200)]
    assert null.count(verdict.REMOVED) / 200 > 0.9


def test_the_best_of_many_null_trials_is_judged_on_fresh_poisons():
    """Null unlearners (never saw the noise) as 30 correlated trials; the search's choice (highest objective on the
    selection part) judged on the verdict part: its p-values are uniform and it is falsely called "not removed" at
    most 5% of the time. Judged on the poisons it was picked on, the same choice is biased toward the null (its
    p-values pile up near 1), which is what the split prevents."""
    rng = np.random.default_rng(RNG_SEED)
    gauss = _attack("gaussian")
    n, trials = 200, 30
    fresh, reused = [], []
    for rep in range(500):
        p, r, _ = _models(rng, n)
        yard = Yardstick.of(gauss, p, r, RunContext(seed=rep), 0.5)
        candidates = [0.6 * r + 0.8 * rng.standard_normal(n) for _ in range(trials)]  # N(0, 1), never saw it
        best = max(candidates, key=lambda u: yard.selection(gauss, u)["objective"])
        fresh.append(yard.judge(gauss, best)["removal_pvalue"])
        reused.append(gauss.residual_pvalue(best[yard.select], None))
    fresh, reused = np.array(fresh), np.array(reused)
    assert stats.kstest(fresh, "uniform").pvalue > 0.01
    assert (fresh < 0.05).mean() <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 500)
    assert stats.kstest(reused, "uniform").pvalue < 1e-6  # the winner's curse the split removes


def test_an_inconclusive_answer_says_what_would_decide_it():
    """A null model on few poisons is inconclusive; with the factor it names times as many poisons it is decided
    (here: "removed") about as often as the power it aims at."""
    rng = np.random.default_rng(RNG_SEED)
    gauss = _attack("gaussian")
    factors = []
    for i in range(100):
        m, answer = _judge(gauss, *_models(rng, 120), seed=i)
        if answer == verdict.INCONCLUSIVE:
            factors.append(m["needed_factor"])
    assert len(factors) > 50 and all(math.isfinite(f) and f > 1 for f in factors)
    k = float(np.median(factors))
    decided = [_judge(gauss, *_models(rng, int(120 * k)), seed=i)[1] for i in range(200)]
    assert decided.count(verdict.REMOVED) / 200 > 0.6


def test_too_weak_to_judge():
    rng = np.random.default_rng(RNG_SEED)
    m, answer = _judge(_attack("gaussian"), *_models(rng, 100, residue_poisoned=0.0))
    assert answer == verdict.TOO_WEAK and math.isnan(m["removal"])


def test_bad_split_and_margin_are_one_line_usage_errors():
    from unlearn_search.errors import UsageError
    from unlearn_search.unlearning import check_split

    gauss, witches = _attack("gaussian"), _attack("witches_brew")
    for bad in (0, 1, 1.5, -0.2):
        with pytest.raises(UsageError, match=f"select_fraction={bad}"):
            check_split(gauss, 100, bad)
        with pytest.raises(UsageError, match=f"equivalence_margin={bad}"):
            verdict.check_fraction("equivalence_margin", bad)
    with pytest.raises(UsageError, match="at least 4 in each part"):
        check_split(gauss, 7, 0.5)
    assert witches.min_part() == 4  # Fisher's test rejects at 5% from four units on
    check_split(gauss, 8, 0.5)


def test_seeds_whose_residues_cancel_never_pool_to_removed():
    est = verdict.Estimate
    residues = [est(0.3, 0.03, math.inf), est(-0.3, 0.03, math.inf)]
    uppers = [est(0.3 - 0.08, 0.03, math.inf), est(-0.3 - 0.08, 0.03, math.inf)]
    lowers = [est(0.3 + 0.08, 0.03, math.inf), est(-0.3 + 0.08, 0.03, math.inf)]
    assert verdict.combined_equivalence(uppers, lowers, residues) == 1.0
    agree = [est(0.01, 0.02, math.inf), est(-0.01, 0.02, math.inf)]
    assert verdict.combined_equivalence([est(e.value - 0.08, 0.02, math.inf) for e in agree],
                                        [est(e.value + 0.08, 0.02, math.inf) for e in agree], agree) < 0.01


def _study_of(values):
    """A study whose trials reach the given selection-part removals (one parameter ``t`` = the removal): what the
    search keeps as best, its Pareto front and its history."""
    from unlearn_search import search

    study = optuna.create_study(direction="maximize")
    for i, removal in enumerate(values):
        trial = study.ask()
        trial.suggest_float("t", 0, 3)
        metrics = {"removal": removal, "removal_select": removal, "objective": verdict.objective(
            0.4 * (1 - removal), 0.4), "budget_used": 0.01 * (i + 1)}
        trial.set_user_attr("metrics", metrics)
        trial.set_constraint(search.CONSTRAINT, -1.0)
        study.tell(trial, metrics["objective"])
    return study


def test_the_search_aims_at_retraining_not_past_it():
    """A synthetic method whose removal grows with its parameter past 1 (1.9 at the end): the best trial, the Pareto
    front's best and each budget level's choice are the trial nearest removal 1, not the largest removal."""
    from unlearn_search import search, tune

    removals = [0.2, 0.5, 0.8, 1.05, 1.3, 1.6, 1.9]
    study = _study_of(removals)
    best = search.best_trial(study)
    assert best is not None and best.user_attrs["metrics"]["removal"] == 1.05
    assert report.best_at_levels([t.user_attrs["metrics"] for t in search.feasible_trials(study)], [0.1]) == [1.05]
    history = tune.objective_history(study.get_trials())
    assert int(np.nanargmax(history)) == 3


def test_combined_answer_uses_holm_across_methods():
    """Two methods with the same moderate residual evidence (combined p = 0.03 each): alone each reads "not
    removed"; Holm over the pair (0.06) makes both inconclusive."""
    z = stats.norm.isf(0.03 / 2)
    seed = {"verdict_code": 0.0, "residual_z": z, "removal_pvalue": 0.03, "equivalence_pvalue": 0.5,
            "equiv_upper": 0.0, "equiv_upper_se": 0.1, "equiv_lower": 0.1, "equiv_lower_se": 0.1,
            "residue": 0.05, "residue_se": 0.1, "residue_raw": 0.05, "residue_raw_se": 0.1,
            "equivalence_margin_abs": 0.08, "removal": 0.5}
    alone = report.aggregate([{"a": dict(seed)}], ["a"])
    assert alone[0].answer == verdict.NOT_REMOVED
    pair = report.aggregate([{"a": dict(seed), "b": dict(seed)}], ["a", "b"])
    assert [r.answer for r in pair] == [verdict.INCONCLUSIVE] * 2
    assert pair[0].residual_holm == pytest.approx(0.06)


def test_mean_ci_is_the_student_t_interval():
    m, lo, hi = verdict.mean_ci([0.2, 0.4, 0.9])
    half = stats.t.ppf(0.975, 2) * np.std([0.2, 0.4, 0.9], ddof=1) / math.sqrt(3)
    assert (m, lo, hi) == pytest.approx((0.5, 0.5 - half, 0.5 + half))


def test_bad_verdict_options_are_refused_at_the_command_line(mlflow_store, cli_exit, capsys):
    """One line, exit status 2, nothing written: a margin or split fraction outside (0, 1), or too few poisons to
    split (7 poisons at 0.3: parts of 2 and 5, below the 4 each part needs)."""
    import os

    assert cli_exit(["tune", "--method", "gd", "--equivalence-margin", "1.5"]) == 2
    assert cli_exit(["compare", "--select-fraction", "0"]) == 2
    assert cli_exit(["unlearn", "--method", "gd", "--select-fraction", "1"]) == 2
    assert cli_exit(["tune", "--method", "gd", "--poison-fraction", "7"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4, err
    assert "equivalence_margin=1.5 is out of range; valid: a number in (0, 1)" in err[0]
    assert "select_fraction=0.0 is out of range" in err[1] and "select_fraction=1.0 is out of range" in err[2]
    assert "give parts of 2 and 5; valid: at least 4 in each part" in err[3]
    assert not os.path.exists("mlruns") and "optuna_journal.log" not in os.listdir()


def test_a_study_is_its_split_and_margin():
    """Trials store their verdict: a study resumed with another selection part or margin would mix them, so each
    gets its own study (the default keeps the plain name)."""
    from unlearn_search.search import TuneConfig

    h = "h" * 16
    names = {TuneConfig(method="gd").name_for(h), TuneConfig(method="gd", select_fraction=0.5).name_for(h),
             TuneConfig(method="gd", equivalence_margin=0.1).name_for(h)}
    assert names == {"gd-hhhhhhhhhhhh-c", "gd-select0.5-hhhhhhhhhhhh-c", "gd-margin0.1-hhhhhhhhhhhh-c"}
