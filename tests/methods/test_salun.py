"""SalUn: a global saliency mask from the forget gradient; random labels on forget, then a retain pass; weights
outside the mask stay bit-identical under weight decay and momentum."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from unlearn_search.errors import UsageError
from unlearn_search.methods import METHODS, Budget
from unlearn_search.methods import salun as salun_mod

PLENTY = Budget(1.0, retrain_cost=1e9)


def _masks(model, splits, ctx, cfg):  # type: ignore[no-untyped-def]
    """The mask the run computes: same model, data, ratio, batch and generator."""
    work = copy.deepcopy(model)
    return salun_mod.saliency_mask(work, splits.x_forget, splits.y_forget, cfg.mask_ratio, cfg.batch_size,
                                   ctx.generator(offset=salun_mod.SALIENCY_OFFSET))


def test_top_fraction_is_one_threshold_over_the_whole_model():
    big, small = torch.tensor([10.0, 9.0, 8.0, 7.0]), torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    m_big, m_small = salun_mod.top_fraction([big, small], 0.5)
    assert m_big.all() and not m_small.any()  # per-tensor thresholds would take half of each
    assert m_small.shape == small.shape
    assert sum(int(m.sum()) for m in salun_mod.top_fraction([big, small], 0.3)) == 2  # floor(0.3 * 8)
    ties = salun_mod.top_fraction([torch.zeros(3), torch.zeros(3)], 0.5)
    assert ties[0].all() and not ties[1].any()  # ties broken by position, deterministically


def test_saliency_is_the_magnitude_of_the_forget_gradient(tiny_model, tiny_splits, ctx):
    xf, yf = tiny_splits.x_forget, tiny_splits.y_forget
    gen = ctx.generator(offset=0)
    grads_before = [None if p.grad is None else p.grad.clone() for p in tiny_model.parameters()]
    masks = salun_mod.saliency_mask(tiny_model, xf, yf, 0.5, batch_size=len(xf), gen=gen)  # one batch
    loss = F.cross_entropy(tiny_model.eval()(xf), yf)
    grads = torch.autograd.grad(loss, list(tiny_model.parameters()))
    want = salun_mod.top_fraction([g.abs() for g in grads], 0.5)
    assert all(torch.equal(a, b) for a, b in zip(masks, want, strict=True))
    for p, g in zip(tiny_model.parameters(), grads_before, strict=True):  # the model's .grad fields untouched
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)
    n = sum(m.numel() for m in masks)
    assert sum(int(m.sum()) for m in masks) == n // 2


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_masked_out_weights_stay_bit_identical_under_weight_decay_and_momentum(
    optimizer, tiny_model, tiny_splits, ctx, monkeypatch
):
    m = METHODS.get("salun")
    cfg = m.config(epochs=2, optimizer=optimizer)
    assert cfg.weight_decay > 0 and cfg.momentum > 0  # both would move masked-out weights if they reached them
    masks = _masks(tiny_model, tiny_splits, ctx, cfg)
    res = m.run(tiny_model, tiny_splits, cfg, PLENTY, ctx)
    moved_in, n_in = 0, 0
    for p0, p1, mask in zip(tiny_model.parameters(), res.model.parameters(), masks, strict=True):
        assert torch.equal(p1[~mask], p0[~mask])
        moved_in += int((p1[mask] != p0[mask]).sum())
        n_in += int(mask.sum())
    assert moved_in > 0.9 * n_in  # the salient half did train
    assert res.info["mask_fraction"] == pytest.approx(0.5, abs=1e-3)

    # the test has teeth: without holding them, weight decay and momentum move the masked-out weights
    monkeypatch.setattr(salun_mod, "hold_masked_out", lambda *a, **k: None)
    leaky = m.run(tiny_model, tiny_splits, cfg, PLENTY, ctx)
    moved_out = sum(int((p1[~mask] != p0[~mask]).sum())
                    for p0, p1, mask in zip(tiny_model.parameters(), leaky.model.parameters(), masks, strict=True))
    assert moved_out > 0


def test_each_epoch_is_a_random_label_forget_pass_then_a_retain_pass(tiny_model, tiny_splits, ctx):
    seen: list[tuple[bool, torch.Tensor]] = []
    tiny_model.register_forward_hook(lambda mod, inp, out: seen.append((mod.training, inp[0].detach().clone())))
    m = METHODS.get("salun")
    cfg = m.config(epochs=2, batch_size=16)
    res = m.run(tiny_model, tiny_splits, cfg, PLENTY, ctx)
    nf, nr = tiny_splits.n_forget, tiny_splits.n_retain
    f_batches, r_batches = math.ceil(nf / 16), math.ceil(nr / 16)
    forget_rows = {tuple(r.flatten().tolist()) for r in tiny_splits.x_forget}

    def kind(x: torch.Tensor) -> str:
        rows = [tuple(r.flatten().tolist()) in forget_rows for r in x]
        return "f" if all(rows) else "r" if not any(rows) else "mixed"

    train = [kind(x) for training, x in seen if training]
    assert train == 2 * (["f"] * f_batches + ["r"] * r_batches)
    evals = [kind(x) for training, x in seen if not training]
    assert evals[:f_batches] == ["f"] * f_batches  # the saliency pass: forget data, eval mode, before training
    assert res.compute_used == nf + 2 * (nf + nr)  # saliency pass + two epochs
    assert res.info["epochs"] == 2 and res.info["steps"] == 2 * (f_batches + r_batches)


def test_random_labels_any_class_or_only_the_others():
    y = torch.arange(4).repeat(500)
    anyl = salun_mod.random_labels(y, 4, torch.Generator().manual_seed(0), exclude_true=False)
    others = salun_mod.random_labels(y, 4, torch.Generator().manual_seed(0), exclude_true=True)
    assert set(anyl.tolist()) == set(others.tolist()) == {0, 1, 2, 3}
    assert 0.2 < float((anyl == y).float().mean()) < 0.3  # the authors' draw keeps about 1/K true labels
    assert not (others == y).any()


def test_unlearning_raises_the_forget_loss(tiny_model, tiny_splits, ctx):
    m = METHODS.get("salun")
    res = m.run(tiny_model, tiny_splits, m.config(epochs=5, lr=0.05), PLENTY, ctx)
    with torch.no_grad():
        before = F.cross_entropy(tiny_model.eval()(tiny_splits.x_forget), tiny_splits.y_forget)
        after = F.cross_entropy(res.model(tiny_splits.x_forget), tiny_splits.y_forget)
    assert after > before


def test_budget_too_small_for_the_saliency_pass_does_nothing(tiny_model, tiny_splits, ctx):
    m = METHODS.get("salun")
    res = m.run(tiny_model, tiny_splits, m.config(), Budget(1.0, tiny_splits.n_forget - 1), ctx)
    assert res.compute_used == 0 and res.info["skipped"] == 1
    assert all(torch.equal(a, b) for a, b in zip(tiny_model.parameters(), res.model.parameters(), strict=True))


def test_bad_values_are_refused():
    m = METHODS.get("salun")
    with pytest.raises(UsageError, match=r"mask_ratio=0 is out of range; valid: \(0, 1\]"):
        m.config(mask_ratio=0)
    with pytest.raises(UsageError, match="exclude_true_label='yes' is not a boolean"):
        m.config(exclude_true_label="yes")
