"""Benchmark: how much of a tune trial's time is overhead (not the method's compute, not its evaluation)?

Runs a short `tune` study on the embedded default in a temporary directory (a fresh MLflow store and Optuna journal
file, as tune's defaults; references trained first and not counted), then, per completed trial, splits the trial's
wall time (Optuna's start-to-complete, which includes sampling, storage writes and the nested MLflow run) into the
method's own compute, its evaluation (final scoring + per-epoch removal for pruning, with the pruner's report and
decision) and the rest, the tool's overhead. Prints the overhead ratio against the target and the evaluation share.

    python benchmarks/tune_overhead.py [--method gd] [--n-trials 20]

Target (issue "a best case you can trust", point 5): overhead <= 5% of trial time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

TARGET = 0.05  # overhead ratio


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
    n = len(rows)
    ratio = overhead / total
    print(f"method={args.method} trials measured={n} (completed; load average {os.getloadavg()[0]:.2f}, "
          f"{os.cpu_count()} CPUs)")
    print(f"trial time {total:.2f}s = method {method:.2f}s + evaluation {evaluation:.2f}s + overhead {overhead:.2f}s")
    print(f"per trial: {total / n * 1000:.0f} ms = method {method / n * 1000:.0f} ms + evaluation "
          f"{evaluation / n * 1000:.0f} ms + overhead {overhead / n * 1000:.0f} ms")
    verdict = "met" if ratio <= TARGET else "NOT met"
    print(f"overhead ratio: {ratio:.3f} of trial time (target <= {TARGET:.2f}: {verdict})")
    print(f"evaluation share: {evaluation / total:.3f} of trial time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
