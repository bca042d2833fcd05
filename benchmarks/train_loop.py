"""Benchmark: one epoch of our `train` against a bare hand-written PyTorch loop doing the same work.

Same model (same initial weights, a fresh copy per run), same data already on the device, same optimizer and
hyperparameters, same batch size, same shuffling and augmentation setting (the bare loop calls the same vectorised
crop/flip kernel, so the comparison measures the loop around it, not the augmentation). Runs are interleaved (ours,
bare, ours, bare, ...) after one warm-up of each; prints the median epoch time of each, their ratio and examples/s.

    python benchmarks/train_loop.py                       # cnn on 1,024 synthetic 3x32x32 images, CPU
    python benchmarks/train_loop.py --model resnet18_cifar --dataset cifar10@5000,1000 --augment crop_flip
    python benchmarks/train_loop.py --device cuda --amp   # CUDA: bf16 autocast + channels_last in both loops

Target (paper-scale issue): ours / bare <= 1.1.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn


def _synthetic(n: int, n_classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, n_classes, (n,), generator=g)


def bare_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace, seed: int) -> None:
    """The loop anyone would write by hand (data and model already on the device)."""
    from unlearn_search.training import apply_crop_flip, draw_crop_flip

    device = x.device
    cuda = device.type == "cuda"
    if cuda:
        model.to(memory_format=torch.channels_last)
    if args.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9,
                                                     weight_decay=args.weight_decay)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    g, g_aug = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    order = torch.randperm(len(x), generator=g).to(device)
    if args.augment == "crop_flip":
        dy, dx, flip = (t.to(device) for t in draw_crop_flip(len(x), g_aug))
    model.train()
    for start in range(0, len(x), args.batch_size):
        idx = order[start:start + args.batch_size]
        xb = x[idx]
        if args.augment == "crop_flip":
            end = start + len(idx)
            xb = apply_crop_flip(xb, dy[start:end], dx[start:end], flip[start:end])
        if cuda:
            xb = xb.contiguous(memory_format=torch.channels_last)
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and args.amp):
            loss = nn.functional.cross_entropy(model(xb), y[idx])
        loss.backward()
        opt.step()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="cnn", help="a model name: cnn, resnet18_cifar, timm:<name> (default cnn)")
    ap.add_argument("--dataset", default="synthetic",
                    help="'synthetic' (--n random 3x32x32 images) or a dataset name, e.g. cifar10@5000,1000")
    ap.add_argument("--n", type=int, default=1024, help="synthetic training points (default 1024)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--augment", default="none", choices=["none", "crop_flip"])
    ap.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA only)")
    ap.add_argument("--repeats", type=int, default=5, help="timed epochs of each loop after one warm-up")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from unlearn_search.context import RunContext, select_device
    from unlearn_search.data import load_dataset
    from unlearn_search.models import ModelSpec, create_model
    from unlearn_search.training import TrainConfig, train

    device = select_device(args.device)
    if args.dataset == "synthetic":
        x, y = _synthetic(args.n)
        n_classes = 10
    else:
        data = load_dataset(args.dataset)
        x, y, n_classes = data.x_train, data.y_train, data.n_classes
    x, y = x.to(device), y.to(device)
    init = create_model(ModelSpec(args.model, tuple(x.shape[1:]), n_classes), seed=0).to(device)  # type: ignore[arg-type]
    cfg = TrainConfig(epochs=1, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                      weight_decay=args.weight_decay, augment=args.augment, amp=args.amp)

    def timed(run: str, i: int) -> float:
        model = copy.deepcopy(init)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        if run == "ours":
            train(model, x, y, cfg, RunContext(seed=i, device=device))
        else:
            bare_epoch(model, x, y, args, seed=i)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    timed("ours", 0), timed("bare", 0)  # warm-up (allocator, kernels, thread pools)
    times: dict[str, list[float]] = {"ours": [], "bare": []}
    for i in range(1, args.repeats + 1):
        for run in ("ours", "bare"):
            times[run].append(timed(run, i))
    ours, bare = statistics.median(times["ours"]), statistics.median(times["bare"])
    print(f"device={device} threads={torch.get_num_threads()} model={args.model} dataset={args.dataset} "
          f"n={len(x)} input={tuple(x.shape[1:])} batch={args.batch_size} optimizer={args.optimizer} "
          f"augment={args.augment} amp={args.amp} repeats={args.repeats}")
    for run in ("ours", "bare"):
        med = statistics.median(times[run])
        print(f"{run}: epoch {med:.3f}s median (all: {', '.join(f'{t:.3f}' for t in times[run])}), "
              f"{len(x) / med:,.0f} examples/s")
    print(f"ratio ours/bare: {ours / bare:.3f} (target <= 1.1)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
