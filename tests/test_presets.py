"""Presets: a flag left at 'default' takes the preset's value, an explicit flag wins, bad names are one line."""

from __future__ import annotations

import pytest
import torch

from unlearn_search import cli
from unlearn_search.presets import PAPER_TRAIN, PRESETS
from unlearn_search.training import TrainConfig


def _scenario(*argv: str):
    args = cli.build_parser(["poison"]).parse_args(["poison", *argv])
    return cli.scenario_from_args(args)


def test_default_preset_is_the_embedded_default():
    cfg = _scenario()
    assert (cfg.dataset, cfg.model, cfg.train) == ("digits", "mlp", TrainConfig())
    assert cfg.attack_params["poison_fraction"] == 0.3  # the gaussian attack's own default


def test_paper_preset_fills_every_unset_flag():
    cfg = _scenario("--preset", "paper")
    assert (cfg.dataset, cfg.model) == ("cifar10", "resnet18_cifar")
    assert cfg.train == PAPER_TRAIN
    assert (PAPER_TRAIN.epochs, PAPER_TRAIN.optimizer, PAPER_TRAIN.augment) == (100, "sgd", "crop_flip")
    assert (cfg.attack_params["poison_fraction"], cfg.attack_params["eps"]) == (750, 0.3)  # a count, not 0.015
    # docs/paper.md 8: 750 poisons of CIFAR-10's 50,000 training points, exactly, as the attack counts them
    from unlearn_search.attacks import ATTACKS
    from unlearn_search.context import RunContext
    from unlearn_search.data import Dataset

    x = torch.zeros(50_000, 1, 1, 1)
    data = Dataset("cifar10-shaped", x, torch.arange(50_000) % 10, x[:10], torch.arange(10), n_classes=10)
    attack = ATTACKS.get("gaussian")(ATTACKS.get("gaussian").config_from(cfg.attack_params))
    assert attack.craft(data, RunContext(seed=0)).n_poison == 750


def test_explicit_flags_override_the_preset():
    cfg = _scenario("--preset", "paper", "--train-epochs", "3", "--model", "cnn", "--eps", "0.2",
                    "--train-amp", "true")
    assert cfg.train.epochs == 3 and cfg.train.amp is True and cfg.model == "cnn"
    assert cfg.train.lr == PAPER_TRAIN.lr  # untouched fields still come from the preset
    assert cfg.attack_params["eps"] == 0.2 and cfg.attack_params["poison_fraction"] == 750


def test_preset_attack_params_apply_only_to_their_attack():
    cfg = _scenario("--preset", "paper", "--attack", "backdoor")
    assert cfg.attack_params["poison_fraction"] == 0.05  # the backdoor's own default, not the paper's gaussian 1.5%


@pytest.mark.parametrize("name", PRESETS.names())
def test_every_preset_names_a_valid_dataset_and_model(name):
    cfg = _scenario("--preset", name)  # ScenarioConfig validates the dataset and model names
    assert (cfg.dataset, cfg.model) == (PRESETS.get(name).dataset, PRESETS.get(name).model)


@pytest.mark.parametrize("argv, needle", [
    (["--preset", "huge"], "unknown preset 'huge'; valid: default, llm-small, paper, paper-llm, paper-small"),
    (["--train-epochs", "many"], "invalid value 'many'"),
])
def test_bad_preset_input_is_one_line_exit_2(argv, needle, capsys, mlflow_store, cli_exit):
    code = cli_exit(["poison", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and needle in err and len(err.splitlines()) == 1


def test_paper_small_runs_poison_end_to_end(tmp_path, monkeypatch, mlflow_store, capsys):
    """The reduced preset on a synthetic CIFAR-10 written in torchvision's layout (offline): the subset, the CNN,
    the SGD + cosine + crop/flip recipe and Gaussian poisoning all run through `poison` (1 epoch, for time)."""
    import mlflow
    from test_datasets import _write_cifar

    _write_cifar(tmp_path / "data", n_per_batch=420, n_test=520)
    monkeypatch.setenv("UNLEARN_SEARCH_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("UNLEARN_SEARCH_DOWNLOAD", "0")
    monkeypatch.setenv("UNLEARN_SEARCH_CIFAR10_VERIFY", "0")  # synthetic files, not the published ones
    assert cli.main(["poison", "--preset", "paper-small", "--train-epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "gus_z" in out and "test_acc" in out
    (run,) = mlflow.search_runs(search_all_experiments=True, filter_string="tags.entry_point = 'poison'").to_dict(
        "records")
    assert run["params.dataset"] == "cifar10@2000,500" and run["params.model"] == "cnn"
    assert run["params.train.augment"] == "crop_flip" and run["params.train.lr_schedule"] == "cosine"
    assert float(run["params.attack.poison_fraction"]) == 0.1
    assert float(run["metrics.poisoned.forget_acc"]) >= 0.0  # the poisoned model was evaluated on the 200 poisons
