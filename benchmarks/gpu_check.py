"""GPU check: the CUDA path of the paper-scale recipe, in one command, for the day a GPU is lent (issue 18).

Prints, on the device it runs on:

1. our training loop (`unlearn_search.training.train`) against a bare PyTorch loop (`train_loop.bare_epoch`, the
   loop `benchmarks/train_loop.py` times) on ``resnet18_cifar``, in fp32 and with bf16 autocast, channels-last on
   CUDA: epoch time, examples per second and the ratio (goal: ours / bare <= 1.1);
2. one short run of the ``paper`` recipe on synthetic CIFAR-format data (50,000 learnable 3x32x32 images): 750
   Gaussian poisons with eps 0.3 (`attacks.gaussian`), the poisoned model trained for 3 epochs of the preset's SGD
   recipe (crop + flip, cosine; bf16 on CUDA), its epoch time and what that makes of the 100-epoch reference, then
   GD unlearning (`methods.gd`) at a small budget, with GUS z before and after;
3. GUS's input gradients batched against one poison at a time (`metrics.gus.input_gradients`), that both agree,
   and the speed-up (goal: >= 50x);
4. peak GPU memory (``torch.cuda.max_memory_allocated``) of each part.

    python benchmarks/gpu_check.py                       # the GPU machine: CUDA if present, about 2-4 minutes
    python benchmarks/gpu_check.py --tiny --device cpu   # seconds on a CPU (what tests/test_gpu_check.py runs)

It needs only torch, timm and numpy: the parts of `unlearn_search` it imports (training, models, attacks, methods,
metrics.gus, presets, context, data) import neither MLflow nor Optuna nor SciPy nor scikit-learn, which the GPU
machine lacks; the test runs it with those blocked. It reads the package from this checkout (no install needed).
Targets are printed, not enforced: the exit status is 0 unless something failed or the gradients disagree.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # this checkout's package, and train_loop beside this script

import torch  # noqa: E402

GIB = 2**30
#: (full, --tiny) sizes: the full ones fit well within 8 minutes on one current GPU.
SIZES = {
    "loop_n": (10_000, 16), "repeats": (3, 1), "image": (32, 8), "n_train": (50_000, 32), "n_test": (1_000, 8),
    "poisons": (750, 4), "batch_size": (128, 8),
}


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (8x8 images, tens of points): a CPU smoke test")
    ap.add_argument("--model", default="resnet18_cifar", help="model name (default resnet18_cifar)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs of the paper recipe's poisoned model (default 3)")
    ap.add_argument("--budget", type=float, default=None,
                    help="GD's unlearning budget, a fraction of retraining with this run's epochs (default 0.1; 0.5 "
                         "with --tiny)")
    ap.add_argument("--eps", type=float, default=0.3, help="Gaussian poison noise std on [0, 1] pixels (default 0.3)")
    for name, (full, tiny) in SIZES.items():
        ap.add_argument(f"--{name.replace('_', '-')}", type=int, default=None,
                        help=f"default {full} ({tiny} with --tiny)")
    a = ap.parse_args()
    a.budget = a.budget if a.budget is not None else 0.5 if a.tiny else 0.1
    for name, (full, tiny) in SIZES.items():
        if getattr(a, name) is None:
            setattr(a, name, tiny if a.tiny else full)
    return a


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Peak:
    """Peak GPU memory of a block (``with Peak(device) as p: ...``; ``p.gib``), nothing on a CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.gib = device, float("nan")

    def __enter__(self) -> Peak:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.gib = torch.cuda.max_memory_allocated(self.device) / GIB


def learnable_images(n: int, size: int, n_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-format synthetic data a model can learn: each class's image is half a fixed random template, half
    noise, in [0, 1]; labels uniform."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.rand((n_classes, 3, size, size), generator=torch.Generator().manual_seed(1234))
    y = torch.randint(0, n_classes, (n,), generator=g)
    return 0.5 * templates[y] + 0.5 * torch.rand((n, 3, size, size), generator=g), y


def loop_check(a: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """Our `train` against `train_loop.bare_epoch`, fp32 and bf16, interleaved after a warm-up of each."""
    from train_loop import bare_epoch

    from unlearn_search.context import RunContext
    from unlearn_search.models import ModelSpec, create_model
    from unlearn_search.presets import PAPER_TRAIN
    from unlearn_search.training import TrainConfig, train

    x, y = learnable_images(a.loop_n, a.image, 10, seed=0)
    x, y = x.to(device), y.to(device)
    init = create_model(ModelSpec(a.model, tuple(x.shape[1:]), 10), seed=0).to(device)
    print(f"[loop] {a.model}, {a.loop_n:,} synthetic 3x{a.image}x{a.image} images on the device, batch "
          f"{a.batch_size}, SGD, crop_flip{', channels_last' if device.type == 'cuda' else ''}; median epoch of "
          f"{a.repeats} after a warm-up, interleaved")
    peaks = {}
    for amp in (False, True):
        cfg = TrainConfig(epochs=1, batch_size=a.batch_size, optimizer="sgd", lr=PAPER_TRAIN.lr,
                          momentum=PAPER_TRAIN.momentum, weight_decay=PAPER_TRAIN.weight_decay, augment="crop_flip",
                          amp=amp)
        bare_args = argparse.Namespace(optimizer="sgd", lr=cfg.lr, weight_decay=cfg.weight_decay,
                                       augment="crop_flip", batch_size=a.batch_size, amp=amp)

        def timed(run: str, i: int, cfg: TrainConfig = cfg, bare_args: argparse.Namespace = bare_args) -> float:
            model = copy.deepcopy(init)
            _sync(device)
            t0 = time.perf_counter()
            if run == "ours":
                train(model, x, y, cfg, RunContext(seed=i, device=device))
            else:
                bare_epoch(model, x, y, bare_args, seed=i)
            _sync(device)
            return time.perf_counter() - t0

        with Peak(device) as peak:
            timed("ours", 0), timed("bare", 0)
            times: dict[str, list[float]] = {"ours": [], "bare": []}
            for i in range(1, a.repeats + 1):
                for run in ("ours", "bare"):
                    times[run].append(timed(run, i))
        ours, bare = statistics.median(times["ours"]), statistics.median(times["bare"])
        name = "bf16" if amp else "fp32"
        note = "" if device.type == "cuda" or not amp else " (autocast is CUDA-only: fp32 here)"
        print(f"  {name}: ours {ours:.3f} s/epoch ({a.loop_n / ours:,.0f} examples/s), bare {bare:.3f} s "
              f"({a.loop_n / bare:,.0f} examples/s), ratio {ours / bare:.3f} (goal <= 1.1){note}")
        peaks[f"loop {name}"] = peak.gib
    return peaks


def gus_z(model: torch.nn.Module, x_clean: torch.Tensor, y: torch.Tensor, noise: torch.Tensor, eps: float,
          device: torch.device) -> float:
    """GUS z of the poisons: mean I_z x sqrt(k) (`metrics.gus.gus_summary`'s ``gus_z``, without its SciPy parts)."""
    import math

    from unlearn_search.metrics.gus import gus_statistic, input_gradients

    stat = gus_statistic(input_gradients(model, x_clean, y, device), noise, eps)
    return float(stat.mean()) * math.sqrt(len(stat))


def recipe_check(a: argparse.Namespace, device: torch.device
                 ) -> tuple[dict[str, float], torch.nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    """The paper recipe, short: Gaussian poisons, the poisoned model, GD unlearning, GUS z before and after."""
    from dataclasses import replace

    from unlearn_search.attacks import ATTACKS
    from unlearn_search.context import RunContext
    from unlearn_search.data import Dataset
    from unlearn_search.methods import METHODS, Budget, Splits
    from unlearn_search.models import ModelSpec, create_model
    from unlearn_search.presets import PAPER_TRAIN
    from unlearn_search.training import accuracy, train

    x, y = learnable_images(a.n_train + a.n_test, a.image, 10, seed=1)
    data = Dataset("synthetic-cifar", x[:a.n_train], y[:a.n_train], x[a.n_train:], y[a.n_train:], n_classes=10)
    gaussian = ATTACKS.get("gaussian")
    attack = gaussian(gaussian.config_from({"poison_fraction": a.poisons, "eps": a.eps}))
    ctx = RunContext(seed=0, device=device)
    poisoning = attack.craft(data, ctx.child(7))
    keep = torch.ones(a.n_train, dtype=torch.bool)
    keep[poisoning.indices] = False
    splits = Splits(x_forget=poisoning.x_poison, y_forget=poisoning.y_poison, x_retain=data.x_train[keep],
                    y_retain=data.y_train[keep])
    recipe = replace(PAPER_TRAIN, epochs=a.epochs, batch_size=a.batch_size, amp=device.type == "cuda")
    print(f"[paper recipe] {a.n_train:,} synthetic 3x{a.image}x{a.image} images, {poisoning.n_poison} Gaussian "
          f"poisons (eps {a.eps}), {a.model}, {a.epochs} epochs of SGD (lr {recipe.lr}, cosine, crop_flip, batch "
          f"{recipe.batch_size}{', bf16 autocast, channels_last' if recipe.amp else ''})")
    peaks = {}
    x_clean, y_clean = data.x_train[poisoning.indices], data.y_train[poisoning.indices]
    noise = poisoning.arrays["noise"]
    with Peak(device) as peak:
        model = create_model(ModelSpec(a.model, data.input_shape, 10), seed=0)
        xs, ys = splits.full()
        _sync(device)
        t0 = time.perf_counter()
        train(model, xs, ys, recipe, ctx.child(11))
        _sync(device)
        t_train = time.perf_counter() - t0
    peaks["poisoned model"] = peak.gib
    per_epoch = t_train / a.epochs
    before = gus_z(model, x_clean, y_clean, noise, a.eps, device)
    acc = accuracy(model, data.x_test, data.y_test, device)
    full = per_epoch * 100 * 50_000 / len(xs)
    print(f"  poisoned model: {a.epochs} epochs in {t_train:.1f} s ({per_epoch:.2f} s/epoch, "
          f"{len(xs) / per_epoch:,.0f} examples/s); 100 epochs of CIFAR-10's 50,000 at this speed: "
          f"{full / 60:.1f} min; test acc {acc:.3f}, gus_z {before:.2f}")
    gd = METHODS.get("gd")
    budget = Budget(a.budget, a.epochs * float(len(splits.x_retain)))
    with Peak(device) as peak:
        _sync(device)
        t0 = time.perf_counter()
        result = gd.run(model, splits, gd.config(epochs=0, batch_size=a.batch_size), budget, ctx.child(5))
        _sync(device)
        t_gd = time.perf_counter() - t0
    peaks["gd unlearning"] = peak.gib
    after = gus_z(result.model, x_clean, y_clean, noise, a.eps, device)
    print(f"  gd unlearning (SGD, lr 0.01, batch {a.batch_size}), budget {a.budget:g} of this run's retraining "
          f"({result.compute_used:,.0f} example-passes): {t_gd:.1f} s; gus_z {before:.2f} -> {after:.2f} (test acc "
          f"{accuracy(result.model, data.x_test, data.y_test, device):.3f})")
    return peaks, model, (x_clean, y_clean)


def gus_check(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> tuple[float, bool]:
    """`input_gradients` batched (its default, 512) against one poison per call; best of two timings each."""
    from unlearn_search.metrics.gus import input_gradients

    def best(fn):  # type: ignore[no-untyped-def]
        times, out = [], None
        for _ in range(2):
            _sync(device)
            t0 = time.perf_counter()
            out = fn()
            _sync(device)
            times.append(time.perf_counter() - t0)
        return min(times), out

    with Peak(device) as peak:
        t_batch, g_batch = best(lambda: input_gradients(model, x, y, device))
        t_loop, g_loop = best(lambda: torch.cat([input_gradients(model, x[i:i + 1], y[i:i + 1], device)
                                                 for i in range(len(x))]))
    same = torch.allclose(g_batch, g_loop, rtol=1e-7, atol=1e-12)
    print(f"[gus] input gradients of {len(x)} poisons (float64): batched {t_batch:.3f} s, one per call "
          f"{t_loop:.3f} s, speed-up {t_loop / t_batch:.1f}x (goal >= 50x); same gradients: {same}")
    return peak.gib, same


def main() -> int:
    a = _args()
    t_start = time.perf_counter()
    from unlearn_search.context import select_device

    device = select_device(a.device)
    import timm

    where = f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else \
        f"{device} ({torch.get_num_threads()} thread(s))"
    print(f"gpu_check: {where}, torch {torch.__version__}, timm {timm.__version__}, python "
          f"{platform.python_version()}{', tiny sizes' if a.tiny else ''}")
    peaks = loop_check(a, device)
    recipe_peaks, model, (x_clean, y_clean) = recipe_check(a, device)
    peaks.update(recipe_peaks)
    peaks["gus"], same = gus_check(model, x_clean, y_clean, device)
    if device.type == "cuda":
        card = torch.cuda.get_device_properties(device).total_memory / GIB
        print(f"[memory] peak GPU memory {max(peaks.values()):.2f} GiB ("
              + ", ".join(f"{k} {v:.2f}" for k, v in peaks.items()) + f"; the card has {card:.0f} GiB)")
    else:
        print("[memory] peak GPU memory: none (not on a GPU)")
    print(f"done in {time.perf_counter() - t_start:.0f} s")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
