"""Benchmark: how much of a tune trial's time is overhead (not the method's compute, not its evaluation)?

Runs a short `tune` study on the embedded default in a temporary directory (fresh MLflow and Optuna SQLite stores,
references trained first and not counted), then, per completed trial, splits the trial's wall time (Optuna's
start-to-complete, which includes sampling, storage writes and the nested MLflow run) into the method's own compute,
its evaluation (final scoring + per-epoch removal for pruning) and the rest. Prints the overhead ratio.

    python benchmarks/tune_overhead.py [--method gd] [--n-trials 20]

Target (issue 4): overhead < 10% of trial time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", default="gd")
    ap.add_argument("--n-trials", type=int, default=20)
    ap.add_argument("--verbose", action="store_true", help="one line per trial")
    ap.add_argument("--storage", default="", help="Optuna storage (default: a journal file, as tune's default)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        import optuna

        from unlearn_search import cli
        from unlearn_search.search import connect_storage

        storage = args.storage or f"{tmp}/optuna_journal.log"  # the default kind of storage
        assert cli.main(["-q", "poison"]) == 0  # references first: not part of any trial
        assert cli.main(["-q", "tune", "--method", args.method, "--n-trials", str(args.n_trials),
                         "--storage", storage, "--study-name", "bench"]) == 0
        study = optuna.load_study(study_name="bench", storage=connect_storage(storage))
        rows = []
        for t in study.trials:
            m = t.user_attrs.get("metrics", {})
            if "method_time_s" not in m or t.datetime_complete is None:
                continue
            total = (t.datetime_complete - t.datetime_start).total_seconds()
            rows.append((total, m["method_time_s"], m["eval_time_s"]))
            if args.verbose:
                print(f"trial {t.number}: total {total:.3f}s method {m['method_time_s']:.3f}s "
                      f"eval {m['eval_time_s']:.3f}s")
    if not rows:
        print("no completed trials to measure")
        return 1
    total = sum(r[0] for r in rows)
    method = sum(r[1] for r in rows)
    evaluation = sum(r[2] for r in rows)
    overhead = total - method - evaluation
    print(f"method={args.method} trials measured={len(rows)}")
    print(f"trial time {total:.2f}s = method {method:.2f}s + evaluation {evaluation:.2f}s + overhead {overhead:.2f}s")
    print(f"overhead ratio: {overhead / total:.3f} of trial time (target < 0.10)")
    print(f"overhead per trial: {overhead / len(rows) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
