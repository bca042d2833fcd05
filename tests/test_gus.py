"""GUS against statistical and hand-computed truths (docs/paper.md 3.1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from unlearn_search.context import RunContext
from unlearn_search.metrics.gus import Z_99, gus_statistic, gus_summary, input_gradients
from unlearn_search.models import ModelSpec, create_model
from unlearn_search.training import TrainConfig, train

DEV = torch.device("cpu")


def test_statistic_by_hand():
    g = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    xi = torch.tensor([[-1.0, 0.0], [0.0, 1.0]])
    # row 0: <-g, xi> = 3, ||g|| = 5 -> 3 / (eps * 5); row 1: -2 / (eps * 2)
    out = gus_statistic(g, xi, eps=0.5)
    assert torch.allclose(out, torch.tensor([3 / 2.5, -2 / 1.0], dtype=torch.float64))


def test_zero_gradient_gives_zero_not_nan():
    out = gus_statistic(torch.zeros(2, 3), torch.ones(2, 3), eps=1.0)
    assert torch.equal(out, torch.zeros(2, dtype=torch.float64))


def test_summary_by_hand():
    ip = np.array([1.0, 2.0, 3.0, 0.0])
    ii = np.array([0.5, -1.0, 2.5, -2.0])
    s = gus_summary(ip, ii)
    assert s["gus"] == pytest.approx(1.5)
    assert s["gus_z"] == pytest.approx(1.5 * 2)  # sqrt(k) = 2
    assert s["gus_pvalue"] == pytest.approx(1 - stats.norm.cdf(3.0))
    assert s["gus_tpr_at_1fpr"] == pytest.approx(1 / 4)  # only 3.0 exceeds 2.326
    assert pytest.approx(2.3263, abs=1e-4) == Z_99
    # AUC: pairs (poison > indep) out of 16; ties count 1/2
    wins = sum((a > b) + 0.5 * (a == b) for a in ip for b in ii)
    assert s["gus_auc"] == pytest.approx(wins / 16)
    assert s["gus_se"] == pytest.approx(np.std(ip, ddof=1) / 2)


def test_batched_gradients_equal_per_sample_loop():
    model = create_model(ModelSpec("cnn", (1, 8, 8), 10), seed=3)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(37, 1, 8, 8, generator=g), torch.randint(0, 10, (37,), generator=g)
    batched = input_gradients(model, x, y, DEV, batch_size=16)
    loop = torch.cat([input_gradients(model, x[i : i + 1], y[i : i + 1], DEV) for i in range(len(x))])
    assert batched.shape == x.shape
    assert torch.allclose(batched, loop, rtol=1e-10, atol=1e-12)


def test_input_gradients_leave_model_untouched():
    model = create_model(ModelSpec("mlp", (1, 8, 8), 10), seed=0).train()
    before = [p.clone() for p in model.parameters()]
    input_gradients(model, torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long), DEV)
    assert model.training and all(p.dtype == torch.float32 for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def _deepcopy_reference(model, x, y, dtype=torch.float64):
    """input_gradients as first written: on a deep copy of the model cast to ``dtype``, in eval mode."""
    import copy

    work = copy.deepcopy(model).to(dtype=dtype).eval()
    xb = x.to(dtype=dtype).requires_grad_(True)
    (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(work(xb), y, reduction="sum"), xb)
    return g


@pytest.mark.parametrize("name", ["mlp", "cnn", "bn"])
def test_functional_gradients_equal_a_deep_copys_bit_for_bit(name):
    """No deep copy per call, same numbers: BatchNorm (running statistics as buffers, cast too) and dropout (off in
    eval mode) included; the model's own modes and dtypes are left as they were."""
    torch.manual_seed(0)
    if name == "bn":
        model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                    torch.nn.Dropout(0.5), torch.nn.Flatten(), torch.nn.Linear(4 * 64, 10))
        model.train()(torch.rand(16, 1, 8, 8))  # non-trivial running statistics
    else:
        model = create_model(ModelSpec(name, (1, 8, 8), 10), seed=3)
    model.train()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(37, 1, 8, 8, generator=g), torch.randint(0, 10, (37,), generator=g)
    for dtype in (torch.float64, torch.float32):
        assert torch.equal(input_gradients(model, x, y, DEV, dtype=dtype), _deepcopy_reference(model, x, y, dtype))
    assert all(m.training for m in model.modules())
    assert all(p.dtype == torch.float32 for p in model.parameters())


def _trained_on(noise_scale: float, use_noise: bool):
    """An MLP trained on digits-like random data where 200 points carry noise; returns stats on those points."""
    g = torch.Generator().manual_seed(1)
    n, k, eps = 600, 200, noise_scale
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)  # random labels: the model must memorise, as with poisons
    noise = eps * torch.randn(k, 1, 8, 8, generator=g)
    x_train = x.clone()
    if use_noise:
        x_train[:k] += noise
    model = create_model(ModelSpec("mlp", (1, 8, 8), 10), seed=0)
    train(model, x_train, y, TrainConfig(epochs=40, batch_size=64), RunContext(0))
    grads = input_gradients(model, x[:k], y[:k], DEV)
    return gus_statistic(grads, noise, eps)


def test_null_is_standard_normal_for_a_model_that_never_saw_the_noise():
    i = _trained_on(0.5, use_noise=False).numpy()
    # Exactly N(0, 1) in theory: a KS test at 1% and the first two moments.
    assert stats.kstest(i, "norm").pvalue > 0.01
    assert abs(i.mean()) < 3 / math.sqrt(len(i))
    assert 0.8 < i.std() < 1.2


def test_statistic_is_clearly_positive_for_a_model_trained_on_the_noise():
    i = _trained_on(0.5, use_noise=True).numpy()
    s = gus_summary(i, np.zeros(0))
    assert s["gus_z"] > 5, s
