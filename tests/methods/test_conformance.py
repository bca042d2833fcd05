"""Every registered method (built-in or installed plugin) honours the contract (methods/__init__.py), through the
public checks of `unlearn_search.conformance` that plugin authors run on theirs; new methods are picked up
automatically."""

from __future__ import annotations

import pytest

from unlearn_search import conformance
from unlearn_search.methods import METHODS

ALL = METHODS.names()


@pytest.mark.parametrize("name", ALL)
def test_defaults_construct_and_summary_is_documented(name):
    conformance.check_config(METHODS.get(name))


@pytest.mark.parametrize("name", ALL)
def test_runs_leaves_input_unchanged_respects_budget_and_is_seeded(name, tiny_model, tiny_splits, ctx):
    conformance.check_run(METHODS.get(name), tiny_model, tiny_splits, ctx)


@pytest.mark.parametrize("name", ALL)
def test_search_space_yields_valid_configs(name):
    conformance.check_search_space(METHODS.get(name))


def test_the_public_suite_catches_a_method_that_mutates_its_input(tiny_model, tiny_splits, ctx):
    """The checks can fail: a method that trains the model it is given, in place, is caught."""
    import dataclasses

    import torch

    from unlearn_search.methods import Method, UnlearnResult

    @dataclasses.dataclass(frozen=True)
    class Cfg:
        pass

    def in_place(model, splits, cfg, budget, c, on_epoch=None):
        with torch.no_grad():
            next(model.parameters()).add_(1.0)
        return UnlearnResult(model.eval(), 0.0)

    with pytest.raises(AssertionError, match="bad: input model mutated"):
        conformance.check_run(Method("bad", Cfg, in_place, None, "bad"), tiny_model, tiny_splits, ctx)


def test_check_method_runs_every_check_on_the_tiny_setting():
    conformance.check_method("gd")


def test_unknown_parameter_names_the_valid_ones():
    from unlearn_search.errors import UsageError

    with pytest.raises(UsageError, match=r"unknown parameter\(s\) alpha for method 'gd'; valid: batch_size, epochs"):
        METHODS.get("gd").config(alpha=1.0)
