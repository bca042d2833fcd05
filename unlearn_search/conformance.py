"""The method contract as checks anyone can run: the built-in methods' conformance tests, public for plugin authors.

A plugin author runs them on their method in their own test suite::

    from unlearn_search.conformance import check_method

    def test_my_method_honours_the_contract():
        check_method("my_method")

Each check raises ``AssertionError`` saying what is wrong. They run on a tiny setting (`tiny_setting`: 8x8 inputs,
4 classes, a small MLP trained for a few epochs on 160 retain and 24 noised forget points), CPU, in seconds. They pin
the contract of `unlearn_search.methods`, not a method's science: a method's defining behaviour needs its own tests.
"""

from __future__ import annotations

import torch
from torch import nn

from .context import RunContext
from .methods import METHODS, Budget, Method, Splits

#: The tiny setting's input shape and number of classes.
TINY_SHAPE = (1, 8, 8)
N_CLASSES = 4


def tiny_splits(n_retain: int = 160, n_forget: int = 24, seed: int = 0) -> Splits:
    """Random but learnable data: class = argmax of four pixel-block means, plus Gaussian-noised forget points."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n_retain + n_forget, *TINY_SHAPE), generator=g)
    y = x.reshape(len(x), 4, 16).mean(dim=2).argmax(dim=1)
    x_f = x[n_retain:] + 0.5 * torch.randn((n_forget, *TINY_SHAPE), generator=g)
    return Splits(x_forget=x_f, y_forget=y[n_retain:], x_retain=x[:n_retain], y_retain=y[:n_retain])


def tiny_setting(seed: int = 0) -> tuple[nn.Module, Splits, RunContext]:
    """(a small MLP trained a little on retain ∪ forget: the tiny setting's poisoned model, its splits, a CPU
    context)."""
    from .models import ModelSpec, create_model
    from .training import TrainConfig, train

    ctx = RunContext(seed=seed, device=torch.device("cpu"))
    splits = tiny_splits(seed=seed)
    model = create_model(ModelSpec("mlp", TINY_SHAPE, N_CLASSES), seed=seed)
    x, y = splits.full()
    return train(model, x, y, TrainConfig(epochs=5, batch_size=32), ctx), splits, ctx


def check_config(method: Method) -> None:
    """The defaults construct a config, and the method's summary (its module docstring's first line) is written."""
    method.config()
    assert method.summary and method.summary != method.name, (
        f"{method.name}: give the method's module a docstring whose first line says what it does")


def check_run(method: Method, model: nn.Module, splits: Splits, ctx: RunContext) -> None:
    """Run twice on the same seed: the input model is never mutated, a new model comes back in eval mode with
    finite outputs of the right shape, the compute used is within the budget, the same seed gives the same model,
    and ``on_epoch`` sees epochs in order."""
    before = {k: v.clone() for k, v in model.state_dict().items()}
    budget = Budget(0.5, retrain_cost=4.0 * splits.n_retain)
    epochs_seen: list[int] = []
    a = method.run(model, splits, method.config(), budget, ctx, lambda e, m, v: epochs_seen.append(e))
    b = method.run(model, splits, method.config(), budget, ctx)
    name = method.name
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), f"{name}: input model mutated"
    assert a.model is not model, f"{name}: return a new model (work on a deep copy), not the input"
    assert 0 <= a.compute_used <= budget.limit + 1e-9, (
        f"{name}: used {a.compute_used} example-passes of a budget of {budget.limit}")
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa), (
        f"{name}: the same seed must give the same model (draw randomness from ctx.generator)")
    assert not a.model.training, f"{name}: return the model in eval mode"
    with torch.no_grad():
        out, expected = a.model(splits.x_retain[:3]), model.eval()(splits.x_retain[:3])
    assert out.shape == expected.shape, f"{name}: outputs of shape {tuple(out.shape)}, not {tuple(expected.shape)}"
    assert torch.isfinite(out).all(), f"{name}: outputs not finite"
    assert epochs_seen == sorted(epochs_seen), f"{name}: on_epoch called out of order: {epochs_seen}"


def check_search_space(method: Method, n: int = 5) -> None:
    """The search space exists and every draw of it makes a valid config."""
    import optuna

    assert method.search_space is not None, f"{method.name}: register a search_space so that tune can search it"
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(n):
        method.config(**method.search_space(study.ask()))


def check_method(name: str, setting: tuple[nn.Module, Splits, RunContext] | None = None) -> None:
    """Every check on the registered method ``name`` (built-in or plugin), in ``setting`` (default `tiny_setting`)."""
    method = METHODS.get(name)
    model, splits, ctx = setting if setting is not None else tiny_setting()
    check_config(method)
    check_run(method, model, splits, ctx)
    check_search_space(method)
