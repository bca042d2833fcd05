"""Benchmark: how much of a tune trial's time is overhead (not the method's compute, not its evaluation)?

Runs a short `tune` study on the embedded default in a temporary directory (a fresh MLflow store and Optuna journal
file, as tune's defaults; references trained first and not counted), then, per completed trial, splits the trial's
wall time (Optuna's start-to-complete, which includes sampling, storage writes and the nested MLflow run) into the
method's own compute, its evaluation (final scoring + per-epoch removal for pruning, with the pruner's report and
decision) and the rest, the overhead. Prints the overhead ratio against the target and the evaluation share, and
splits the overhead further into Optuna's sampling, Optuna's storage writes (outside evaluation: the trial, its
parameters, attributes and state) and what is left, the tool's own code (MLflow hand-off, bookkeeping), each timed
in the same run by wrapping those Optuna calls in timers.

    python benchmarks/tune_overhead.py [--method gd] [--n-trials 20]

Target (issue "a best case you can trust", point 5): overhead <= 5% of trial time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

TARGET = 0.05  # overhead ratio

#: Optuna calls timed apart: the sampler's work per trial, and the storage's writes. Intermediate values are written
#: by `trial.report` inside the evaluation callback, whose time already counts as evaluation, so they are left out.
SAMPLER_CALLS = ("infer_relative_search_space", "sample_relative", "sample_independent", "before_trial", "after_trial")
WRITE_CALLS = ("create_new_trial", "set_trial_param", "set_trial_user_attr", "set_trial_system_attr",
               "set_trial_state_values")


def _time_calls(cls: type, names: tuple[str, ...], spent: list[float]) -> None:
    """Wrap ``cls``'s methods ``names`` so that their wall time adds up in ``spent[0]`` (outermost calls only)."""
    import functools
    import time

    depth = [0]

    def wrap(f):  # type: ignore[no-untyped-def]
        @functools.wraps(f)
        def timed(*a, **k):  # type: ignore[no-untyped-def]
            depth[0] += 1
            t0 = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    spent[0] += time.perf_counter() - t0
        return timed

    for name in names:
        setattr(cls, name, wrap(getattr(cls, name)))


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

        sampling, writes = [0.0], [0.0]
        _time_calls(optuna.samplers.TPESampler, SAMPLER_CALLS, sampling)
        for storage_cls in (optuna.storages.JournalStorage, optuna.storages.RDBStorage):
            _time_calls(storage_cls, WRITE_CALLS, writes)

        storage = args.storage or f"{tmp}/optuna_journal.log"  # the default kind of storage
        assert cli.main(["-q", "poison"]) == 0  # references first: not part of any trial
        sampling[0] = writes[0] = 0.0  # the study's, not the references'
        assert cli.main(["-q", "tune", "--method", args.method, "--n-trials", str(args.n_trials),
                         "--storage", storage, "--study-name", "bench"]) == 0
        study = optuna.load_study(study_name="bench", storage=connect_storage(storage))
        rows = []
        n_other = 0  # pruned or failed trials: their sampling and writes are left out of the per-trial split below
        for t in study.trials:
            m = t.user_attrs.get("metrics", {})
            if "method_time_s" not in m or t.datetime_complete is None:
                n_other += 1
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
    # Sampling and writes were timed over every trial of the study; the share of the measured (completed) ones is
    # estimated by their count (the per-trial cost of both does not depend on how the trial ended).
    share = n / (n + n_other)
    s_ms, w_ms = sampling[0] * share / n * 1000, writes[0] * share / n * 1000
    own_ms = overhead / n * 1000 - s_ms - w_ms
    print(f"overhead per trial: Optuna sampling {s_ms:.1f} ms + Optuna storage writes {w_ms:.1f} ms + the tool's own "
          f"code {own_ms:.1f} ms (ratio of the tool's own code: {own_ms / (total / n * 1000):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
