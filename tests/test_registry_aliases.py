"""Which registered version later jobs judge (issue 27): the scenario's tuned best, by its alias, never "the newest"."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_a_hand_unlearn_run_after_tune_does_not_replace_the_tuned_best(mlflow_store) -> None:  # type: ignore[no-untyped-def]
    from mlflow.tracking import MlflowClient

    from unlearn_search import cli, tracking
    from unlearn_search.analyze import newest_registered
    from unlearn_search.scenario import ScenarioConfig
    from unlearn_search.training import TrainConfig

    args = ["--train-epochs", "3"]
    assert cli.main(["-q", "tune", "--method", "gd", "--n-trials", "3", "--utility-tolerance", "1", *args]) == 0
    cfg = ScenarioConfig(train=TrainConfig(epochs=3))
    client = MlflowClient()
    name = "unlearn_search.unlearned.gd"
    tuned = client.get_model_version_by_alias(name, tracking.scenario_alias(cfg.hash))
    assert tuned.tags["study"].startswith("gd-")
    assert cli.main(["-q", "unlearn", "--method", "gd", "--budget", "0.05", *args]) == 0  # registers a newer version
    newest = max(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
    assert newest > int(tuned.version)
    (judged,) = newest_registered("gd", cfg)
    assert judged.version == tuned.version  # analyze, U-LiRA and compare's LiRA judge the tuned best
    # the alias is the scenario's: tune never sets the comparison's plain @best
    assert "best" not in {a for v in client.search_model_versions(f"name = '{name}'") for a in v.aliases}
    # a study of another kind (another selection split: another objective) registers its best, never under the alias
    assert cli.main(["-q", "tune", "--method", "gd", "--n-trials", "3", "--utility-tolerance", "1",
                     "--select-fraction", "0.5", *args]) == 0
    other = client.search_model_versions(f"name = '{name}' and tags.study LIKE '%-select0.5-%'")
    assert other and all(not v.aliases for v in other)
    assert client.get_model_version_by_alias(name, tracking.scenario_alias(cfg.hash)).version == tuned.version
