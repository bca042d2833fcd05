"""Training-time augmentation (crop + flip), the cosine schedule and the CUDA-only options on CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from unlearn_search import training
from unlearn_search.context import RunContext
from unlearn_search.errors import UsageError
from unlearn_search.models import ModelSpec, create_model
from unlearn_search.training import TrainConfig, apply_crop_flip, crop_flip, draw_crop_flip, train

PAD = training.CROP_PADDING


def _reference(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """One image at a time, the obvious way."""
    h, w = x.shape[2:]
    out = []
    for img, i, j, f in zip(x, dy.tolist(), dx.tolist(), flip.tolist(), strict=True):
        crop = F.pad(img, (PAD, PAD, PAD, PAD))[:, i:i + h, j:j + w]
        out.append(crop.flip(-1) if f else crop)
    return torch.stack(out)


def _images(n: int = 64) -> torch.Tensor:
    return 0.5 + 0.5 * torch.rand(n, 3, 12, 10, generator=torch.Generator().manual_seed(0))  # never 0


def test_crop_flip_matches_per_image_reference():
    x = _images()
    dy, dx, flip = draw_crop_flip(len(x), torch.Generator().manual_seed(1))
    out = apply_crop_flip(x, dy, dx, flip)
    assert out.shape == x.shape
    assert torch.equal(out, _reference(x, dy, dx, flip))
    assert set(dy.tolist()) == set(range(2 * PAD + 1)) and 0 < int(flip.sum()) < len(x)
    shifted = (dy != PAD) | (dx != PAD)
    assert bool((out[shifted] == 0).flatten(1).any(1).all())  # every shifted crop shows padding zeros
    assert not bool((out[~shifted] == 0).any())
    assert int((out != x).flatten(1).any(1).sum()) > len(x) // 2


def test_centre_crop_is_identity_and_flip_mirrors():
    x = _images(4)
    centre = torch.full((4,), PAD)
    assert torch.equal(apply_crop_flip(x, centre, centre, torch.zeros(4, dtype=torch.bool)), x)
    assert torch.equal(apply_crop_flip(x, centre, centre, torch.ones(4, dtype=torch.bool)), x.flip(-1))


def test_crop_flip_seeded():
    x = _images()
    a = crop_flip(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, crop_flip(x, torch.Generator().manual_seed(5)))
    assert not torch.equal(a, crop_flip(x, torch.Generator().manual_seed(6)))


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.rand(64, 3, 8, 8, generator=g), torch.randint(0, 4, (64,), generator=g)


def _train(**cfg):
    x, y = _data()
    model = create_model(ModelSpec("cnn", (3, 8, 8), 4), seed=0)
    losses: list[float] = []
    train(model, x, y, TrainConfig(**{"epochs": 2, "batch_size": 32, **cfg}), RunContext(seed=1),
          on_epoch=lambda e, loss: losses.append(loss))
    return model.state_dict(), losses


def _same(a, b) -> bool:
    return a[1] == b[1] and all(torch.equal(a[0][k], b[0][k]) for k in a[0])


def test_train_with_crop_flip_is_seeded_and_differs():
    aug = _train(augment="crop_flip")
    assert all(loss == loss for loss in aug[1]) and len(aug[1]) == 2
    assert _same(aug, _train(augment="crop_flip"))
    assert not _same(aug, _train())


def test_none_never_augments(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("augmented although augment='none'")

    monkeypatch.setattr(training, "apply_crop_flip", fail)
    _train(augment="none")
    with pytest.raises(AssertionError, match="augmented"):
        _train(augment="crop_flip")


def test_cosine_schedule_and_cpu_amp():
    base = _train(optimizer="sgd", lr=0.1)
    assert _same(_train(optimizer="sgd", lr=0.1, epochs=1, lr_schedule="cosine"), _train(optimizer="sgd", lr=0.1,
                                                                                          epochs=1))
    assert not _same(_train(optimizer="sgd", lr=0.1, lr_schedule="cosine"), base)  # epoch 2 at a lower lr
    assert _same(_train(optimizer="sgd", lr=0.1, amp=True), base)  # amp is CUDA-only: CPU unchanged


def test_config_validation():
    with pytest.raises(UsageError, match="unknown augment 'flip'; valid: crop_flip, none"):
        TrainConfig(augment="flip")
    with pytest.raises(UsageError, match="unknown lr_schedule 'step'; valid: constant, cosine"):
        TrainConfig(lr_schedule="step")


def test_poisons_enter_training_raw_and_only_training_augments(monkeypatch):
    """The augmentation receives the poisoned images as stored (noise already in the raw input), so poisons are
    applied before augmentation; evaluation (GUS included) never augments."""
    from unlearn_search import training
    from unlearn_search.context import RunContext
    from unlearn_search.models import create_model
    from unlearn_search.scenario import ScenarioConfig, build_scenario, evaluate

    seen: list[torch.Tensor] = []
    real = training.apply_crop_flip

    def spy(x, *args, **kwargs):
        seen.append(x.clone())
        return real(x, *args, **kwargs)

    monkeypatch.setattr(training, "apply_crop_flip", spy)
    ctx = RunContext(seed=0)
    cfg = ScenarioConfig(train=TrainConfig(epochs=1, augment="crop_flip"))
    sc = build_scenario(cfg, ctx)
    model = train(create_model(sc.spec, seed=0), *sc.corrupted, cfg.train, ctx)
    inputs = torch.cat(seen).flatten(1)
    assert len(inputs) == len(sc.corrupted[0])  # one epoch: every training point augmented once
    poisons = sc.poisoning.x_poison.flatten(1)
    assert bool((inputs[None, :, :] == poisons[:, None, :]).all(-1).any(-1).all())  # each poison, as stored
    n_calls = len(seen)
    evaluate(model, sc, ctx)
    assert len(seen) == n_calls


def test_iterate_batches_on_a_device_gives_the_same_order():
    from unlearn_search.training import iterate_batches

    a = list(iterate_batches(10, 3, torch.Generator().manual_seed(4)))
    b = list(iterate_batches(10, 3, torch.Generator().manual_seed(4), device=torch.device("cpu")))
    assert [x.tolist() for x in a] == [x.tolist() for x in b] and sorted(torch.cat(a).tolist()) == list(range(10))
