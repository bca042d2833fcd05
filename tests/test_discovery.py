"""Partial discovery (issue 17): the method is told a seeded fraction of the poisons; the rest stay in its retain set.

Pinned: the subset's size, seeding and nesting; what the method is given; that removal and GUS are still measured
over all poisons and reported for each part apart (a method that retrains on what it is told removes the told poisons
and keeps the others); bad fractions refused in one line; the sweep through `compare` end to end."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from unlearn_search.context import RunContext
from unlearn_search.errors import UsageError
from unlearn_search.unlearning import Discovery, Yardstick, discovered_mask, splits_of, unlearn


@pytest.fixture(scope="module")
def default_scenario():  # type: ignore[no-untyped-def]
    from unlearn_search.scenario import ScenarioConfig, build_scenario, evaluate_with_scores, train_references

    ctx = RunContext(seed=0, device=torch.device("cpu"))
    scenario = build_scenario(ScenarioConfig(), ctx)
    models = train_references(scenario, ctx)
    evaluated = {role: evaluate_with_scores(models[role], scenario, ctx) for role in ("poisoned", "retrain")}
    return scenario, models, {r: m for r, (m, _) in evaluated.items()}, {r: s for r, (_, s) in evaluated.items()}, ctx


def test_the_told_subset_is_sized_seeded_and_nested() -> None:
    ctx = RunContext(seed=3, device=torch.device("cpu"))
    half, tenth, every = (discovered_mask(200, f, ctx) for f in (0.5, 0.1, 1.0))
    assert half.sum() == 100 and tenth.sum() == 20 and every.all()
    assert not (tenth & ~half).any(), "the poisons told at 0.1 are among those told at 0.5"
    assert np.array_equal(half, discovered_mask(200, 0.5, RunContext(seed=3, device=torch.device("cpu"))))
    assert not np.array_equal(half, discovered_mask(200, 0.5, RunContext(seed=4, device=torch.device("cpu"))))
    assert discovered_mask(5, 0.01, ctx).sum() == 1  # at least one poison is told


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_a_fraction_outside_zero_one_is_refused(bad: float) -> None:
    with pytest.raises(UsageError, match=rf"discovered_fraction={bad!r} is out of range; valid: \(0, 1\]$"):
        discovered_mask(10, bad, RunContext(seed=0, device=torch.device("cpu")))


def test_the_untold_poisons_join_the_retain_set_as_trained_on(default_scenario) -> None:  # type: ignore[no-untyped-def]
    scenario, _, _, _, ctx = default_scenario
    told = discovered_mask(scenario.poisoning.n_poison, 0.25, ctx)
    s = splits_of(scenario, told)
    xf, yf = scenario.forget
    xr, _ = scenario.retain
    assert torch.equal(s.x_forget, xf[torch.from_numpy(told)]) and torch.equal(s.y_forget, yf[torch.from_numpy(told)])
    assert s.n_retain == len(xr) + int((~told).sum())
    assert torch.equal(s.x_retain[len(xr):], xf[torch.from_numpy(~told)])  # the poisons as trained on, noise kept
    full = splits_of(scenario)
    assert torch.equal(full.x_forget, xf) and full.n_retain == len(xr)


def _method(name: str, run):  # type: ignore[no-untyped-def]
    from unlearn_search.methods import Method

    @dataclasses.dataclass(frozen=True)
    class Cfg:
        pass

    return Method(name, Cfg, run, None, name)


def test_removal_is_measured_over_all_poisons_and_over_each_part(default_scenario) -> None:  # type: ignore[no-untyped-def]
    """A method that retrains from scratch on the retain set it is given removes the poisons it was told and keeps
    the others it took for clean data (removal of each part anchored at GUS's exact null: 1 - z_u / z_p)."""
    from unlearn_search.methods import UnlearnResult
    from unlearn_search.models import create_model
    from unlearn_search.training import train

    scenario, models, metrics, scores, ctx = default_scenario
    seen = []

    def retrain_on_what_it_is_told(model, splits, cfg, budget, c, on_epoch=None):  # type: ignore[no-untyped-def]
        seen.append(splits.n_forget)
        fresh = create_model(scenario.spec, seed=c.seed)
        train(fresh, splits.x_retain, splits.y_retain, scenario.config.train, c)
        return UnlearnResult(fresh.eval(), budget.limit)

    discovery = Discovery.of(scenario, 0.5, scores["poisoned"], scores["retrain"], ctx)
    yard = Yardstick.of(scenario.attack, scores["poisoned"], scores["retrain"], ctx)
    out = unlearn(_method("retrain_told", retrain_on_what_it_is_told), None, 1.0, scenario, models["poisoned"],
                  metrics, yard, ctx, discovery=discovery)
    m = out.metrics
    k = scenario.poisoning.n_poison
    assert seen == [round(k / 2)] and m["n_discovered"] == round(k / 2) and m["discovered_fraction"] == 0.5
    assert len(out.scores) == k  # GUS over every poison, as without partial discovery
    assert m["removal_discovered"] > 0.7 and m["removal_undiscovered"] < 0.3
    assert m["removal_undiscovered"] < m["removal"] < m["removal_discovered"]
    z = out.scores
    told = discovery.told
    assert m["gus_z_discovered"] == pytest.approx(z[told].mean() * np.sqrt(told.sum()))
    assert m["gus_z_undiscovered"] == pytest.approx(z[~told].mean() * np.sqrt((~told).sum()))

    def nothing(model, splits, cfg, budget, c, on_epoch=None):  # type: ignore[no-untyped-def]
        return UnlearnResult(model, 0.0)

    same = unlearn(_method("nothing", nothing), None, 0.1, scenario, models["poisoned"], metrics, yard,
                   ctx, discovery=discovery).metrics
    assert same["removal_discovered"] == pytest.approx(0.0) and same["removal_undiscovered"] == pytest.approx(0.0)


def test_bad_fractions_are_refused_at_the_command_line(mlflow_store, cli_exit, capsys) -> None:  # type: ignore[no-untyped-def]
    assert cli_exit(["tune", "--method", "gd", "--discovered-fraction", "0"]) == 2
    assert cli_exit(["compare", "--discovered-fraction", "0.5,abc"]) == 2
    assert cli_exit(["compare", "--discovered-fraction", "0.5,1", "--attacks", "gaussian,backdoor"]) == 2
    err = capsys.readouterr().err
    assert "discovered_fraction=0.0 is out of range; valid: (0, 1]" in err
    assert "discovered_fraction='0.5,abc' is not a list of numbers" in err
    assert "discovered_fraction=0.5,1 sweeps one attack" in err
    import os

    assert not os.path.exists("mlruns") and "optuna_journal.log" not in os.listdir()


@pytest.mark.slow
def test_compare_sweeps_the_fraction(mlflow_store, capsys) -> None:  # type: ignore[no-untyped-def]
    from mlflow.tracking import MlflowClient

    from unlearn_search import cli

    assert cli.main(["compare", "--methods", "gd", "--stop", "fixed",
                     "--n-trials", "2", "--seeds", "1", "--train-epochs", "10",
                     "--discovered-fraction", "0.5,1"]) == 0
    out = capsys.readouterr().out
    assert "| method | discovered | removal (all poisons) | removal (discovered) | removal (undiscovered) |" in out
    assert "| gd | 0.5 |" in out and "| gd | 1 |" in out
    client = MlflowClient()
    exp = client.get_experiment_by_name("unlearn_search").experiment_id
    (sweep,) = client.search_runs([exp], "tags.entry_point = 'compare_discovery'")
    arts = {a.path for a in client.list_artifacts(sweep.info.run_id, "plots")}
    assert {"plots/removal_by_discovery.png", "plots/removal_by_discovery_discovered.png",
            "plots/removal_by_discovery_undiscovered.png"} <= arts
    tunes = client.search_runs([exp], "tags.entry_point = 'tune'")
    assert len({r.data.tags["study"] for r in tunes}) == 2  # one study per fraction
    row = next(r for r in tunes if "discovered0.5" in r.data.tags["study"])
    assert {"removal_discovered", "removal_undiscovered", "gus_z_discovered"} <= set(row.data.metrics)
