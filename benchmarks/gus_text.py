"""Benchmark: GUS on text, batched over poisons against a per-sample loop (issue "the paper's language half").

Builds the embedded ``sentiment`` texts tokenised for a config-built GPT-2 (no download), takes ``--poisons`` rows
as poisons, and times `metrics.gus.embedding_gradients` (the gradient of the loss with respect to the clean token
embeddings, float64) in batches of 64 against the same call one poison at a time, checks that both give the same
gradients, and prints the speed-up measured in this one run.

    python benchmarks/gus_text.py [--model gpt2-tiny] [--poisons 120] [--max-length 32]
"""

from __future__ import annotations

import argparse
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gpt2-tiny")
    ap.add_argument("--poisons", type=int, default=120)
    ap.add_argument("--max-length", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="best of this many timings of each")
    args = ap.parse_args()

    import torch

    from unlearn_search.data import load_dataset
    from unlearn_search.metrics.gus import embedding_gradients
    from unlearn_search.models import ModelSpec, create_model

    data = load_dataset("sentiment", args.model, args.max_length)
    model = create_model(ModelSpec(args.model, data.input_shape, data.n_classes, data.vocab_size), seed=0)
    x, y = data.x_train[:args.poisons], data.y_train[:args.poisons]
    cpu = torch.device("cpu")

    def batched() -> torch.Tensor:
        return embedding_gradients(model, x, y, cpu, batch_size=64)

    def loop() -> torch.Tensor:
        return torch.cat([embedding_gradients(model, x[i:i + 1], y[i:i + 1], cpu) for i in range(len(x))])

    def best(fn):  # type: ignore[no-untyped-def]
        times, out = [], None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        return min(times), out

    t_batch, g_batch = best(batched)
    t_loop, g_loop = best(loop)
    same = torch.allclose(g_batch, g_loop, rtol=1e-9, atol=1e-12)
    print(f"model={args.model} poisons={len(x)} max_length={args.max_length} threads={torch.get_num_threads()}")
    print(f"batched: {t_batch * 1000:.0f} ms; per-sample loop: {t_loop * 1000:.0f} ms; "
          f"speed-up {t_loop / t_batch:.1f}x; same gradients: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
