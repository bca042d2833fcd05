"""Gaussian poisoning: exact count, labels and non-poison inputs untouched, noise kept."""

from __future__ import annotations

import pytest
import torch

from unlearn_search.attacks import ATTACKS, Poisoning
from unlearn_search.context import RunContext
from unlearn_search.data import load_dataset
from unlearn_search.errors import UsageError


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.mark.parametrize("fraction", [0.01, 0.15, 0.5])
def test_exact_count_labels_and_inputs(digits, fraction):
    cls = ATTACKS.get("gaussian")
    attack = cls(cls.config_from({"poison_fraction": fraction, "eps": 0.5}))
    p = attack.craft(digits, RunContext(seed=3))
    n = len(digits.x_train)
    assert p.n_poison == round(fraction * n)
    assert len(set(p.indices.tolist())) == p.n_poison
    assert torch.equal(p.y_poison, digits.y_train[p.indices])  # labels unchanged
    assert torch.allclose(p.x_poison - digits.x_train[p.indices], p.arrays["noise"], atol=1e-6)
    assert p.arrays["noise"].std().item() == pytest.approx(0.5, rel=0.1)
    # the independent null noise is a different draw of the same law
    assert not torch.equal(p.arrays["noise"], p.arrays["indep_noise"])
    # the clean dataset itself is not modified
    assert torch.equal(digits.x_train, load_dataset("digits").x_train)


def test_seeded_and_round_trips(digits):
    cls = ATTACKS.get("gaussian")
    attack = cls(cls.config_from({}))
    a, b = attack.craft(digits, RunContext(seed=1)), attack.craft(digits, RunContext(seed=1))
    c = attack.craft(digits, RunContext(seed=2))
    assert torch.equal(a.x_poison, b.x_poison) and not torch.equal(a.indices, c.indices)
    back = Poisoning.from_bytes(a.to_bytes())
    assert torch.equal(back.indices, a.indices) and torch.equal(back.arrays["noise"], a.arrays["noise"])


@pytest.mark.parametrize(
    "params, needle",
    [({"poison_fraction": 0.0}, "poison_fraction=0.0"), ({"poison_fraction": 1.5}, "poison_fraction=1.5"),
     ({"eps": 0.0}, "eps=0.0"), ({"eps": -1.0}, "eps=-1.0")],
)
def test_bad_config(params, needle):
    with pytest.raises(UsageError, match=needle):
        ATTACKS.get("gaussian").config_from(params)


def test_unknown_attack_lists_choices():
    with pytest.raises(UsageError, match="unknown attack 'nope'; valid: backdoor, gaussian"):
        ATTACKS.get("nope")
