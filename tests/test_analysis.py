"""Why unlearning fails (H1, H2) and LiRA (issue 16): hand-computed distances, known spans, the first GD cosine by
hand, LiRA at chance on a model that never saw the poisons and high on the one that memorised them, and the
`analyze` entry point end to end with reuse."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from unlearn_search import analysis
from unlearn_search.context import RunContext
from unlearn_search.errors import UsageError


def _linear(weights: list[list[float]]) -> nn.Module:
    m = nn.Linear(len(weights[0]), len(weights), bias=False)
    with torch.no_grad():
        m.weight.copy_(torch.tensor(weights))
    return m


def test_model_shift_and_progress_by_hand() -> None:
    poisoned, retrain, control = _linear([[0.0, 0.0]]), _linear([[3.0, 4.0]]), _linear([[1.0, 0.0]])
    x = torch.zeros(4, 2)  # every model outputs the same (one class, zero inputs): output distances 0
    s = analysis.model_shift(poisoned, retrain, control, x, torch.device("cpu"))
    assert (s["h1_param_l1_poison"], s["h1_param_l2_poison"]) == (7.0, 5.0)
    assert (s["h1_param_l1_clean"], s["h1_param_l2_clean"]) == (1.0, 1.0)
    assert (s["h1_param_l1_ratio"], s["h1_param_l2_ratio"]) == (7.0, 5.0)
    assert s["h1_output_l1_poison"] == 0.0 and s["h1_output_l2_clean"] == 0.0
    p = analysis.progress(_linear([[1.5, 2.0]]), poisoned, retrain)  # half-way along the needed shift
    assert p == pytest.approx({"h1_travel_l2": 2.5, "h1_progress": 0.5, "h1_remaining": 0.5})
    sideways = analysis.progress(_linear([[4.0, -3.0]]), poisoned, retrain)  # orthogonal to it: no progress
    assert sideways["h1_progress"] == pytest.approx(0.0) and sideways["h1_remaining"] == pytest.approx(np.sqrt(2))


def test_removing_duplicates_moves_nothing_removing_distinct_points_does() -> None:
    """The known answer behind H1's control: logistic regression trained full-batch on separable data; a set of
    duplicated points, D ∪ D, has the same mean loss and gradients as D at every step, so removing the duplicates
    moves the model by float rounding only, while removing just ten of the copies (their twins stay, so those ten
    points lose half their weight) moves it for real."""
    from unlearn_search.models import ModelSpec, create_model
    from unlearn_search.training import TrainConfig, train

    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 1, 2, 2, generator=g)
    y = (x.flatten(1).sum(1) > 0).long()  # separable
    recipe = TrainConfig(epochs=60, batch_size=1000, optimizer="sgd", lr=0.5, momentum=0.0)  # one full batch
    ctx = RunContext(seed=0, device=torch.device("cpu"))

    def fit(xs: torch.Tensor, ys: torch.Tensor) -> nn.Module:
        return train(create_model(ModelSpec("linear", (1, 2, 2), 2), seed=0), xs, ys, recipe, ctx)

    doubled = fit(torch.cat([x, x]), torch.cat([y, y]))
    s = analysis.model_shift(doubled, fit(x, y), fit(torch.cat([x, x[10:]]), torch.cat([y, y[10:]])), x,
                             torch.device("cpu"))
    assert s["h1_param_l2_poison"] < 1e-5 and s["h1_output_l1_poison"] < 1e-6  # duplicates: nothing moved
    assert s["h1_param_l2_clean"] > 1e-2  # ten of the copies: it moved


def test_output_distance_by_hand() -> None:
    a, b = _linear([[0.0], [0.0]]), _linear([[np.log(3.0)], [0.0]])  # softmax (1/2, 1/2) vs (3/4, 1/4) at x = 1
    l1, l2 = analysis.output_distance(a, b, torch.ones(5, 1), torch.device("cpu"))
    assert l1 == pytest.approx(0.5) and l2 == pytest.approx(np.sqrt(2) / 4)


def test_span_fraction_is_one_inside_the_span_and_small_outside() -> None:
    g = torch.Generator().manual_seed(0)
    grads = torch.randn(5, 1000, generator=g, dtype=torch.float64)
    inside = grads.T @ torch.randn(5, generator=g, dtype=torch.float64)
    f = analysis.gradient_span_fraction(grads, inside, ranks=(1, 5))
    assert f["all"] == pytest.approx(1.0) and f["top5"] == pytest.approx(1.0) and f["top1"] < 1.0
    outside = torch.randn(1000, generator=g, dtype=torch.float64)
    assert analysis.gradient_span_fraction(grads, outside)["all"] < 0.03  # about 5/1000 for a random direction
    top = grads[0] / grads[0].norm()  # the leading direction of a rank-1 matrix
    assert analysis.gradient_span_fraction(torch.stack([grads[0], 2 * grads[0]]), top, ranks=(1,))["top1"] == \
        pytest.approx(1.0)


@pytest.fixture(scope="module")
def default_scenario():  # type: ignore[no-untyped-def]
    from unlearn_search.scenario import ScenarioConfig, build_scenario, train_references

    ctx = RunContext(seed=0, device=torch.device("cpu"))
    scenario = build_scenario(ScenarioConfig(), ctx)
    return scenario, train_references(scenario, ctx), ctx


def test_control_set_drops_k_random_clean_points_and_keeps_the_poisons(default_scenario) -> None:  # type: ignore[no-untyped-def]
    scenario, _, ctx = default_scenario
    x, y = analysis.control_set(scenario, ctx)
    xc, _ = scenario.corrupted
    k = scenario.poisoning.n_poison
    assert len(x) == len(xc) - k
    assert torch.equal(x[-k:], scenario.poisoning.x_poison) and torch.equal(y[-k:], scenario.poisoning.y_poison)
    x2, _ = analysis.control_set(scenario, ctx)
    assert torch.equal(x, x2)  # the same random points every time


def test_first_gd_cosine_is_the_negative_gradients_by_hand(default_scenario) -> None:  # type: ignore[no-untyped-def]
    scenario, refs, ctx = default_scenario
    poisoned = refs["poisoned"]
    before = analysis.param_vector(poisoned)
    d = analysis.param_vector(refs["retrain"]) - before
    al = analysis.gd_alignment(poisoned, scenario.retain, d, ctx, steps=30, batch_size=64)
    assert len(al["step_cosine"]) == 30 and np.all(al["step_cosine"] != 0)  # every step moves (epochs reshuffled)
    gen = ctx.generator(offset=137)
    idx = torch.randperm(len(scenario.retain[0]), generator=gen)[:64]
    xr, yr = scenario.retain
    loss = nn.functional.cross_entropy(poisoned.eval()(xr[idx]), yr[idx])  # the first batch's mean loss, by hand
    g = torch.cat([t.flatten() for t in torch.autograd.grad(loss, list(poisoned.parameters()))]).double()
    assert al["step_cosine"][0] == pytest.approx(float(-g.dot(d) / (g.norm() * d.norm())), rel=1e-9)
    # after one step the cumulative update is that step, read back from the float32 weights (rounding: ~1e-3)
    assert al["cumulative_cosine"][0] == pytest.approx(al["step_cosine"][0], rel=1e-2)
    assert torch.equal(analysis.param_vector(poisoned), before)  # the poisoned model is not mutated


def test_h1_l1_ratio_over_control_draws_by_hand() -> None:
    """H1 as the paper states it: ℓ1 shifts, one ratio per control draw, their mean and t-interval."""
    def linear(w: list[float]) -> nn.Module:
        m = nn.Linear(len(w), 1, bias=False)
        with torch.no_grad():
            m.weight.copy_(torch.tensor([w]))
        return m

    poisoned, retrain = linear([0.0, 0.0]), linear([3.0, -1.0])  # ℓ1 shift 4
    controls = [linear([1.0, 1.0]), linear([2.0, 0.0]), linear([0.0, -1.0])]  # ℓ1 shifts 2, 2, 1
    h1 = analysis.l1_ratio_over_draws(poisoned, retrain, controls)
    assert [h1[f"h1_l1_ratio_draw{i}"] for i in range(3)] == [2.0, 2.0, 4.0]
    half = stats.t.ppf(0.975, 2) * np.std([2.0, 2.0, 4.0], ddof=1) / math.sqrt(3)
    assert (h1["h1_l1_ratio_mean"], h1["h1_l1_ratio_low"], h1["h1_l1_ratio_high"]) == pytest.approx(
        (8 / 3, 8 / 3 - half, 8 / 3 + half))


def test_lira_scores_by_hand() -> None:
    s = analysis.lira_scores(np.array([0.0, 2.0]), np.array([2.0, 2.0]), np.array([0.0, 0.0]), 1.0, 1.0)
    assert s == pytest.approx([-2.0, 2.0])  # log N(φ; 2, 1) - log N(φ; 0, 1) = 2φ - 2


@pytest.fixture(scope="module")
def shadows6(default_scenario):  # type: ignore[no-untyped-def]
    scenario, _, ctx = default_scenario
    return analysis.shadow_models(scenario, 6, ctx)


@pytest.mark.slow
def test_lira_is_at_chance_on_a_model_that_never_saw_the_poisons(default_scenario, shadows6) -> None:  # type: ignore[no-untyped-def]
    """LiRA's null is the poisons' own: scored under the fits of the other pairs, the left-out replicate of the
    retrained model's training is the negative. So a model that never saw the poisons (the retrained reference, and
    an independent retraining with another seed) gives AUC 0.5 ± 0.05 and about 1% at 1% FPR; the poisoned model
    stays well above (measured: docs/analyze.md, benchmarks/lira_calibration.py). The old null (test points as
    negatives) gave the retrained model AUC 0.28."""
    from unlearn_search.models import create_model
    from unlearn_search.training import train

    scenario, refs, ctx = default_scenario
    fits = analysis.fit_shadows(shadows6, scenario, ctx.device)
    assert fits.phis.shape == (6, scenario.poisoning.n_poison)
    xr, yr = scenario.retain
    independent = train(create_model(scenario.spec, seed=10_000), xr, yr, scenario.config.train, ctx.child(500))
    for model in (refs["retrain"], independent.eval()):
        never = analysis.lira(model, scenario, fits, ctx.device)
        assert abs(never["lira_auc"] - 0.5) < 0.05 and never["lira_tpr_at_1fpr"] < 0.03, never
    poisoned = analysis.lira(refs["poisoned"], scenario, fits, ctx.device)
    assert poisoned["lira_tpr_at_1fpr"] > 0.1 and poisoned["lira_auc"] > 0.7, poisoned
    assert math.isfinite(poisoned["lira_tpr_at_0.1fpr"])  # 3 pairs x 431 poisons: over 1,000 negatives
    again = analysis.ShadowFits.from_arrays(fits.to_arrays())
    assert analysis.lira(refs["poisoned"], scenario, again, ctx.device) == poisoned  # the stored fits score the same
    for older in ({"phis": fits.phis}, {"phis": fits.phis, "format": np.array([2])}):  # made by earlier code
        with pytest.raises(ValueError, match=r"format [12], not 3"):
            analysis.ShadowFits.from_arrays(older)
    with pytest.raises(ValueError, match="too few shadow models"):  # 4 shadows: one pair left when one is held out
        analysis.lira(refs["poisoned"], scenario, analysis.ShadowFits(fits.phis[:4]), ctx.device)


def test_shadows_are_replicates_of_the_two_references_trainings(default_scenario, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Each "in" shadow trains on exactly S_corr (the retain set and every poison, as the poisoned model) and each
    "out" shadow on exactly the retain set (as the retrained reference), every one with a seed of its own: so an
    "out" shadow is a model of the retrained reference's kind and LiRA's null is that of a model that never saw the
    poisons."""
    from unlearn_search import analysis as a

    scenario, _, ctx = default_scenario
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    monkeypatch.setattr(a, "train", lambda model, x, y, cfg, c: seen.append((x, y)) or model)
    monkeypatch.setattr(a, "create_model", lambda spec, seed: seen.append(seed) or nn.Linear(1, 1))
    a.shadow_models(scenario, 6, ctx)
    seeds, sets = seen[0::2], seen[1::2]
    assert len(set(seeds)) == 6
    for i, (x, y) in enumerate(sets):
        want = scenario.corrupted if i % 2 == 0 else scenario.retain
        assert torch.equal(x, want[0]) and torch.equal(y, want[1])


def _separation(fits: analysis.ShadowFits) -> float:
    """Mean of μ_in − μ_out over the poisons in units of the pooled standard deviation: how far apart the two
    hypotheses are (per point the difference is noisy with few shadows; its mean over the poisons is not)."""
    g = fits.fit()
    return float(np.mean((g.mu_in - g.mu_out) / np.sqrt((g.sd_in**2 + g.sd_out**2) / 2)))


@pytest.mark.slow
def test_ulira_separates_a_method_that_forgets_nothing_and_not_one_that_retrains(default_scenario, shadows6) -> None:  # type: ignore[no-untyped-def]
    """U-LiRA's defining property, on the target's own task. Each "in" shadow is told to unlearn exactly what the
    target unlearned: all k poisons, from the retain set alone (no test points). An "unlearner" that does nothing
    leaves trained-on poisons looking trained on: the hypotheses stay apart and the poisoned model is told from a
    model that never saw them. One that retrains from scratch without the poisons it is told (a perfect unlearner)
    makes "unlearned" and "never seen" the same hypothesis. Either way the retrained reference, scored as the null
    check, reads AUC 0.5 ± 0.05: the null is calibrated. The stored shadow models are not changed by a method."""
    from unlearn_search.models import create_model
    from unlearn_search.training import train

    scenario, refs, ctx = default_scenario
    k = scenario.poisoning.n_poison
    xf, xr = scenario.forget[0], scenario.retain[0]
    told = []
    before = [p.detach().clone() for p in shadows6.models[0].parameters()]

    def nothing(model: nn.Module, splits, c: RunContext) -> nn.Module:  # type: ignore[no-untyped-def]
        told.append((torch.equal(splits.x_forget, xf), torch.equal(splits.x_retain, xr)))
        return model

    def scribble(model: nn.Module, splits, c: RunContext) -> nn.Module:  # type: ignore[no-untyped-def]
        for p in model.parameters():  # a method that writes into the model it is given
            p.data.zero_()
        return model

    def retrain(model: nn.Module, splits, c: RunContext) -> nn.Module:  # type: ignore[no-untyped-def]
        fresh = create_model(scenario.spec, seed=c.seed)
        train(fresh, splits.x_retain, splits.y_retain, scenario.config.train, c)
        return fresh.eval()

    kept = analysis.ulira_fits(shadows6, scenario, nothing, ctx)
    assert told == [(True, True)] * 3  # one per pair: all k poisons, the retain set alone
    analysis.ulira_fits(shadows6, scenario, scribble, ctx)
    assert all(torch.equal(p, q) for p, q in zip(before, shadows6.models[0].parameters(), strict=True))
    forgotten = analysis.ulira_fits(shadows6, scenario, retrain, ctx)
    assert kept.phis.shape == (6, k)
    assert _separation(kept) > 1.0 > 0.2 > abs(_separation(forgotten))
    seen = analysis.ulira(refs["poisoned"], refs["retrain"], scenario, kept, ctx.device)
    assert seen["ulira_auc"] > 0.8 and seen["ulira_tpr_at_1fpr"] > 0.1, seen
    assert abs(seen["ulira_retrain_auc"] - 0.5) < 0.05, seen
    fine = analysis.ulira(refs["retrain"], refs["retrain"], scenario, forgotten, ctx.device)
    assert abs(fine["ulira_auc"] - 0.5) < 0.05 and abs(fine["ulira_retrain_auc"] - 0.5) < 0.05, fine


def test_shadow_count_must_be_even(default_scenario) -> None:  # type: ignore[no-untyped-def]
    scenario, _, ctx = default_scenario
    for bad in (3, 2, 4):
        with pytest.raises(UsageError, match=f"shadows={bad} is not valid; valid: an even number >= 6"):
            analysis.train_shadows(scenario, bad, ctx)


@pytest.mark.slow
def test_analyze_end_to_end_logs_h1_h2_lira_and_reuses_what_it_trained(mlflow_store, capsys, caplog) -> None:  # type: ignore[no-untyped-def]
    from mlflow.tracking import MlflowClient

    from unlearn_search import cli

    args = ["--train-epochs", "20"]
    assert cli.main(["-q", "tune", "--method", "gd", "--n-trials", "3", *args]) == 0
    assert cli.main(["-q", "analyze", "--shadows", "6", "--gd-steps", "5", "--span-batches", "4", *args]) == 0
    out = capsys.readouterr().out
    assert "H1: removing the poisons moved the parameters" in out and "| gd |" in out
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("unlearn_search").experiment_id],
                                "tags.entry_point = 'analyze'")
    m = run.data.metrics
    assert {"h1_param_l2_ratio", "h2_cosine_cumulative_poison", "h2_span_all_clean", "gd.lira_tpr_at_1fpr",
            "retrain.lira_auc", "no_unlearning.mia_tpr_at_1fpr", "gd.h1_progress", "gd.ulira_auc",
            "gd.ulira_tpr_at_1fpr"} <= set(m)
    assert run.data.tags["mlflow.note.content"].startswith("H1: ")
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/h1_model_shift.png", "plots/h2_gd_cosine.png", "plots/detectors_tpr.png"} <= arts
    assert len(client.search_model_versions("name = 'unlearn_search.control'")) == 3  # H1's three control draws
    # a second analysis trains nothing: the control and the shadows' fits are reused
    caplog.set_level("INFO", logger="unlearn_search")
    assert cli.main(["analyze", "--shadows", "6", "--gd-steps", "5", "--span-batches", "4", *args]) == 0
    logged = caplog.text
    assert "clean control (draw 0): reusing" in logged and "LiRA: reusing 6 shadow models" in logged
    assert "U-LiRA: gd on 6 shadow models" in logged and "LiRA: training" not in logged
    assert len(client.search_model_versions("name = 'unlearn_search.control'")) == 3  # H1's three control draws


@pytest.mark.slow
def test_compare_puts_lira_beside_gus_and_the_loss_mia(mlflow_store, capsys, caplog) -> None:  # type: ignore[no-untyped-def]
    """With --lira-shadows the comparison table gains LiRA's columns for every row and its headline LiRA's view; the
    shadows are trained once per scenario: a second comparison (or `analyze`) reuses their fits. With --hypotheses
    its headline says what H1 and H2 found. Both off by default."""
    from mlflow.tracking import MlflowClient

    from unlearn_search import cli

    args = ["compare", "--methods", "gd", "--stop", "fixed", "--n-trials", "2", "--train-epochs", "10", "--seeds", "1"]
    assert cli.main([*args, "--lira-shadows", "6", "--hypotheses", "true", "--ulira", "true"]) == 0
    out = capsys.readouterr().out
    assert "H1: removing the poisons moved the parameters" in out and "H2: after 50 clean-data GD steps" in out
    header = next(line for line in out.splitlines() if line.startswith("| method"))
    assert "LiRA TPR@1%FPR" in header and "LiRA AUC" in header and "MIA TPR@1%FPR" in header
    assert "U-LiRA AUC" in header
    assert "LiRA at 1% FPR (mean over seeds): poisoned" in out
    client = MlflowClient()
    exp = client.get_experiment_by_name("unlearn_search").experiment_id
    rows = {r.data.tags["method"]: r.data.metrics for r in client.search_runs([exp], "tags.kind = 'row'")}
    assert {"lira_tpr_at_1fpr", "lira_auc", "ulira_auc"} <= set(rows["gd"]) and "lira_auc" in rows["retrain"]
    caplog.set_level("INFO", logger="unlearn_search")
    assert cli.main(["analyze", "--shadows", "6", "--gd-steps", "2", "--span-batches", "2",
                     "--train-epochs", "10"]) == 0
    assert "LiRA: reusing 6 shadow models" in caplog.text and "LiRA: training" not in caplog.text
    assert "clean control (draw 0): reusing" in caplog.text
    capsys.readouterr()  # analyze's own output  # the control --hypotheses registered
    assert cli.main(args) == 0  # off by default: the table and headline as before
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("| method"))
    assert "LiRA" not in header and "H1:" not in out


def test_compare_refuses_an_odd_shadow_count(mlflow_store, capsys, cli_exit) -> None:  # type: ignore[no-untyped-def]
    code = cli_exit(["compare", "--methods", "gd", "--lira-shadows", "3"])
    assert code == 2
    assert capsys.readouterr().err.strip() == ("error: lira_shadows=3 is not valid; valid: 0 (off) or an even number "
                                               ">= 6 (pairs of replicates; fewer cannot calibrate LiRA's null)")


def test_compare_refuses_ulira_without_shadows_or_with_partial_discovery(mlflow_store, capsys, cli_exit) -> None:  # type: ignore[no-untyped-def]
    assert cli_exit(["compare", "--methods", "gd", "--ulira", "true"]) == 2
    assert cli_exit(["compare", "--methods", "gd", "--ulira", "true", "--lira-shadows", "6",
                     "--discovered-fraction", "0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: ulira=true needs shadow models: give lira_shadows (an even number >= 6) too",
                   "error: ulira=true applies when every poison is told; discovered_fraction=0.5 is not 1"]


def test_a_registered_setting_is_read_back_from_its_tags() -> None:
    """U-LiRA unlearns its shadows with the setting of each registered model, read back from the version's tags:
    an `unlearn` run's config fields (a tuple tagged as str(tuple)) and a tuned trial's through the search space."""
    from types import SimpleNamespace

    from unlearn_search.analyze import registered_setting
    from unlearn_search.methods import METHODS
    from unlearn_search.models import ModelSpec, create_model

    model = create_model(ModelSpec("mlp", (1, 8, 8), 4), seed=0)
    scrub = METHODS.get("scrub").config(lr=0.003, lr_decay_epochs=(2, 4))
    tags = {f"param.{k}": str(getattr(scrub, k)) for k in ("lr", "lr_decay_epochs", "alpha", "optimizer")}
    cfg, budget = registered_setting(SimpleNamespace(tags={**tags, "param.budget": "0.05"}), "scrub", model)
    assert budget == 0.05 and cfg.lr == 0.003 and cfg.lr_decay_epochs == (2, 4) and cfg.optimizer == "adam"
    tuned = {"study": "gd-x", "param.lr": "0.0123", "param.optimizer": "adam", "param.weight_decay": "0.001",
             "param.budget": "0.07"}
    cfg, budget = registered_setting(SimpleNamespace(tags=tuned), "gd", model)
    assert (cfg.lr, cfg.optimizer, cfg.weight_decay, budget) == (0.0123, "adam", 0.001, 0.07)
    assert cfg.epochs == 0  # not a tag: the search space's own "run until the budget is spent"


def test_the_null_check_flags_a_retrained_model_off_chance() -> None:
    """Beside every LiRA number: the retrained model's AUC, flagged outside 0.5 ± 0.05 (the old null's 0.278)."""
    from unlearn_search import report

    assert report.null_check(0.49).endswith("(within 0.5 ± 0.05)")
    assert "NOT within 0.5 ± 0.05" in report.null_check(0.278) and "NOT within" in report.null_check(0.56)


def test_lira_warns_when_it_cannot_tell_the_poisoned_model_from_the_retrained_one() -> None:
    """Low power is said, not left to the reader: the poisoned model must be flagged above twice the retrained
    model's rate (and above 2%) for a method "at the retrained level" to mean anything."""
    from unlearn_search import report

    assert report.lira_power(0.62, 0.015) == ""
    assert "no power" in report.lira_power(0.025, 0.015) and "0.025" in report.lira_power(0.025, 0.015)
    assert "no power" in report.lira_power(0.019, 0.001)  # twice the 1% floor, not twice a lucky 0.1%
    assert "no power" in report.lira_power(math.nan, 0.01)
