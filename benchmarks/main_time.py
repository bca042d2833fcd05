"""Benchmark: wall time of the main job (`compare` over the default seeds) from an empty store, with a breakdown.

Runs ``python -m unlearn_search -q compare --seeds 3`` (8 methods x 20 trials per seed, each seed a full scenario
with its own poisoned and retrained models) as a fresh process in a temporary directory with an empty MLflow
store and Optuna journal, so imports and every first-time cost count, and prints the wall time against the target.
The breakdown is read back from the runs the job logged (no instrumentation of the job itself):

- startup: process start to the compare run's start (imports, argument checks, store set-up);
- references: per seed, the gap before its first tune study (crafting the poisons, training and registering the
  poisoned and retrained models);
- tune studies: the tune runs' durations, split into trials (the trial runs' durations, themselves split into the
  method's compute, its evaluation and the rest) and per-study fixed costs (opening the study, loading the
  references, re-running the best trial, plots, fANOVA importances, registering the best model);
- the rest: everything else (the comparison's table and plots, process exit).

    python benchmarks/main_time.py [--seeds 3] [--keep DIR] [-- extra compare flags]

Target (issue "a best case you can trust", point 5): at most 300 s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

TARGET_S = 300.0


def breakdown(uri: str, t_start: float, wall: float) -> dict[str, float]:
    """Seconds per part of the job, from the runs in the store at ``uri`` (see the module docstring)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    runs = []
    for exp in client.search_experiments():
        token = None
        while True:
            page = client.search_runs([exp.experiment_id], max_results=1000, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                break
    compare = [r for r in runs if r.data.tags.get("entry_point") == "compare"]
    tunes = sorted((r for r in runs if r.data.tags.get("entry_point") == "tune"), key=lambda r: r.info.start_time)
    tune_ids = {r.info.run_id for r in tunes}
    trials = [r for r in runs if r.data.tags.get("tune_run") in tune_ids and "trial" in r.data.tags
              and r.data.tags.get("entry_point") is None]
    if not compare or not tunes:
        return {}
    t0 = min(r.info.start_time for r in compare) / 1000
    out: dict[str, float] = defaultdict(float)
    out["startup"] = t0 - t_start
    prev_end = t0
    seen: set[str] = set()
    for r in tunes:
        h = r.data.tags.get("scenario_hash", "")
        if h not in seen:  # the first study of a scenario: the gap before it is the references' time
            seen.add(h)
            out["references"] += r.info.start_time / 1000 - prev_end
        prev_end = r.info.end_time / 1000
        out["tune studies"] += (r.info.end_time - r.info.start_time) / 1000
    for r in trials:
        out["trials"] += (r.info.end_time - r.info.start_time) / 1000
        out["trials: method"] += r.data.metrics.get("method_time_s", 0.0)
        out["trials: evaluation"] += r.data.metrics.get("eval_time_s", 0.0)
    out["trials: rest"] = out["trials"] - out["trials: method"] - out["trials: evaluation"]
    out["per-study fixed costs"] = out["tune studies"] - out["trials"]
    out["rest"] = wall - out["startup"] - out["references"] - out["tune studies"]
    out["n_trials"] = float(len(trials))
    out["n_studies"] = float(len(tunes))
    return dict(out)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--keep", default="", help="run in this (empty) directory and keep it, instead of a temp dir")
    ap.add_argument("extra", nargs="*", help="further compare flags (after --)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        if any(work.iterdir()):
            print(f"{work} is not empty: the benchmark starts from an empty store")
            return 2
        uri = f"sqlite:///{work}/mlflow.db"
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
        env.pop("MLFLOW_RUN_ID", None)
        cmd = [sys.executable, "-m", "unlearn_search", "-q", "compare", "--seeds", str(args.seeds), *args.extra]
        load = os.getloadavg()[0]
        t_start = time.time()
        proc = subprocess.run(cmd, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wall = time.time() - t_start
        if proc.returncode != 0:
            print(proc.stderr[-3000:])
            print(f"compare failed with exit status {proc.returncode}")
            return 1
        parts = breakdown(uri, t_start, wall)
    print(f"command: {' '.join(cmd[1:])}  (load average before: {load:.2f}, after: {os.getloadavg()[0]:.2f}; "
          f"{os.cpu_count()} CPUs)")
    print(f"wall time: {wall:.1f} s (target <= {TARGET_S:.0f} s: {'met' if wall <= TARGET_S else 'NOT met'})")
    if parts:
        n_trials, n_studies = int(parts.pop("n_trials")), int(parts.pop("n_studies"))
        for k, v in parts.items():
            extra = ""
            if k == "trials" and n_trials:
                extra = f"  ({n_trials} trials, {1000 * v / n_trials:.0f} ms each)"
            if k == "per-study fixed costs" and n_studies:
                extra = f"  ({n_studies} studies, {v / n_studies:.2f} s each)"
            print(f"  {k:<24}{v:8.1f} s {v / wall:6.1%}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
