"""poison_fraction takes a fraction or a count: a fraction keeps its stored scenarios' hashes, a count is exact and
spelled one way (750 = 750.0 = "750"), bad values are one-line errors naming the value and what is valid."""

from __future__ import annotations

import pytest
import torch

from unlearn_search import cli
from unlearn_search.attacks import ATTACKS, poison_amount, poison_count
from unlearn_search.context import RunContext
from unlearn_search.data import Dataset
from unlearn_search.errors import UsageError
from unlearn_search.scenario import ScenarioConfig

VALID = "valid: a fraction in (0, 1) or a whole number of poisons >= 1"


def _scenario(*argv: str) -> ScenarioConfig:
    return cli.scenario_from_args(cli.build_parser(["poison"]).parse_args(["poison", *argv]))


def test_fractions_keep_the_hashes_scenarios_were_stored_under():
    # computed before counts existed (the embedded default of then, 15% poisons; the paper's old 0.015 with eps 0.3)
    assert ScenarioConfig(attack_params={"poison_fraction": 0.15}).hash == "e2eb261cf7d0df60"
    assert ScenarioConfig(attack_params={"poison_fraction": 0.015, "eps": 0.3}).hash == "2803e397569ecdda"
    assert _scenario("--preset", "paper-small").hash == "060a39362ce3e37d"


def test_a_count_is_one_scenario_however_it_is_spelled():
    flag, preset = _scenario("--preset", "paper", "--poison-fraction", "750.0"), _scenario("--preset", "paper")
    params = _scenario("--preset", "paper", "--attack-params", "poison_fraction=750")
    assert flag.hash == preset.hash == params.hash
    assert flag.attack_params["poison_fraction"] == 750 and isinstance(flag.attack_params["poison_fraction"], int)
    assert flag.to_flat()["attack.poison_fraction"] == 750
    assert _scenario("--preset", "paper", "--poison-fraction", "1000").attack_params["poison_fraction"] == 1000
    assert _scenario("--preset", "paper", "--poison-fraction", "0.015").hash != preset.hash  # another spelling


@pytest.mark.parametrize("attack", ["gaussian", "backdoor"])
def test_a_count_crafts_exactly_that_many_poisons(attack):
    cls = ATTACKS.get(attack)
    x = torch.rand(500, 1, 8, 8)
    data = Dataset("tiny", x, torch.arange(500) % 10, x[:20], torch.arange(20) % 10, n_classes=10)
    for amount, k in ((37, 37), (37.0, 37), (1 if attack == "backdoor" else 2, 1 if attack == "backdoor" else 2),
                      (0.1, 50)):
        a = cls(cls.config_from({"poison_fraction": amount}))
        assert a.n_poisons(len(x)) == k
        assert a.craft(data, RunContext(seed=0)).n_poison == k, (attack, amount)


def test_count_arithmetic():
    assert poison_count(750, 50_000) == 750 and poison_count(0.015, 50_000) == 750
    assert poison_count(50_000, 50_000) == 50_000 and poison_count(1, 10) == 1
    assert poison_amount(0.5) == 0.5 and poison_amount(3.0) == 3 and isinstance(poison_amount(3.0), int)
    assert ATTACKS.get("gradient_canceling").adds_points and not ATTACKS.get("gaussian").adds_points


@pytest.mark.parametrize("value, needle", [
    (0, "poison_fraction=0 is out of range; " + VALID),
    (-3, "poison_fraction=-3 is out of range; " + VALID),
    (float("nan"), "poison_fraction=nan is out of range; " + VALID),
    (750.5, "poison_fraction=750.5 is neither a fraction below 1 nor a whole number of poisons; " + VALID),
    ("many", "poison_fraction='many' is not a number; " + VALID),
])
@pytest.mark.parametrize("attack", ["gaussian", "backdoor", "witches_brew", "gradient_canceling"])
def test_bad_amounts_are_one_line_errors(attack, value, needle):
    with pytest.raises(UsageError) as e:
        ATTACKS.get(attack).config_from({"poison_fraction": value})
    assert str(e.value) == needle


def test_a_count_above_the_training_set_is_refused_with_its_size():
    with pytest.raises(UsageError) as e:
        poison_count(50_001, 50_000)
    assert str(e.value) == ("poison_fraction=50001 asks for 50001 poisons of 50000 training points; valid: a "
                            "fraction in (0, 1) or a whole number of poisons 1..50000")


@pytest.mark.parametrize("value, needle", [
    ("-1", "poison_fraction=-1.0 is out of range; " + VALID),
    ("12.5", "poison_fraction=12.5 is neither a fraction below 1 nor a whole number of poisons"),
    ("1e9", "poison_fraction=1000000000 asks for 1000000000 poisons of 1437 training points"),
])
def test_bad_counts_on_the_command_line_exit_2_before_any_run(value, needle, mlflow_store, capsys, cli_exit):
    from pathlib import Path

    assert cli_exit(["poison", f"--poison-fraction={value}"]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not Path("mlflow.db").exists()
