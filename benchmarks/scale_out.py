"""Benchmark: trials per minute of one study with 1 and with 2 workers, and the per-trial storage cost of
PostgreSQL against the journal file, on this machine.

Starts what a cluster runs (tests/services.py): a PostgreSQL server (Debian's package) holding the studies and an
MLflow tracking server on it; trains the scenario's references first (not timed), then runs `tune` workers as
separate processes on one study each: 1 worker, then 2 workers. Throughput is the study's finished trials over the
span from its first trial's start to its last trial's end (worker start-up and the final summary excluded). Then runs
benchmarks/tune_overhead.py once with a journal file and once with PostgreSQL, for the overhead per trial.

    python benchmarks/scale_out.py [--n-trials 20] [--method gd]

Target (issue "Scale-out on the engines people already run"): 2 workers >= 1.7x one worker on the default.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
TARGET = 1.7


def _throughput(storage: str, study: str) -> tuple[float, int]:
    import optuna

    trials = [t for t in optuna.load_study(study_name=study, storage=storage).trials
              if t.state.is_finished() and t.datetime_start and t.datetime_complete]
    span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    return len(trials) / span * 60, len(trials)


def _postgres_cpu_s() -> float:
    """CPU seconds used so far by the PostgreSQL server (the processes of the user ``postgres``, with their
    finished children: a connection's backend process ends with the connection, its time then counts in the
    server's main process)."""
    out = subprocess.run(["ps", "-u", "postgres", "-o", "pid="], capture_output=True, text=True).stdout
    ticks = 0
    for pid in out.split():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        ticks += sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def main() -> int:
    import services

    ap = argparse.ArgumentParser()
    ap.add_argument("--n-trials", type=int, default=20, help="trials per worker")
    ap.add_argument("--method", default="gd")
    args = ap.parse_args()
    optuna_log = __import__("logging").getLogger("optuna")
    optuna_log.setLevel("WARNING")
    with tempfile.TemporaryDirectory() as tmp, services.postgres() as server:
        optuna_db = services.create_database(server, "optuna")
        mlflow_db = services.create_database(server, "mlflow")
        with services.mlflow_server(mlflow_db, Path(tmp) / "mlflow") as tracking:
            # the password from the environment, as a cluster would pass it
            env = {**os.environ, "MLFLOW_TRACKING_URI": tracking, "PGPASSWORD": services.PASSWORD}
            storage = optuna_db.replace(services.PASSWORD, "${PGPASSWORD}")
            run = [sys.executable, "-m", "unlearn_search", "-q"]
            subprocess.run([*run, "poison"], cwd=tmp, env=env, check=True)  # references: not timed
            rates = {}
            for n in (1, 2):
                study = f"bench-{n}-workers"
                t0, pg0 = time.perf_counter(), _postgres_cpu_s()
                procs = [subprocess.Popen([*run, "tune", "--method", args.method, "--n-trials", str(args.n_trials),
                                           "--storage", storage, "--study-name", study], cwd=tmp, env=env,
                                          stdout=subprocess.DEVNULL) for _ in range(n)]
                assert all(p.wait() == 0 for p in procs)
                wall, pg = time.perf_counter() - t0, _postgres_cpu_s() - pg0
                rates[n], count = _throughput(optuna_db, study)
                print(f"{n} worker(s): {count} trials, {rates[n]:.0f} trials/min (wall {wall:.0f} s with start-up "
                      f"and summaries; PostgreSQL's processes used {pg:.0f} CPU s of it, "
                      f"{pg / count * 1000:.0f} ms per trial)")
            ratio = rates[2] / rates[1]
            print(f"2 workers / 1 worker: {ratio:.2f}x (target >= {TARGET}: {'met' if ratio >= TARGET else 'NOT met'};"
                  f" {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f})")
        overhead = {}
        for name, storage in (("journal file", ""), ("PostgreSQL", optuna_db)):
            out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "tune_overhead.py"), "--n-trials",
                                  str(args.n_trials), *(["--storage", storage] if storage else [])],
                                 capture_output=True, text=True, check=True).stdout
            per_trial = re.search(r"per trial: (\d+) ms = .* \+ overhead (\d+) ms", out)
            assert per_trial is not None, out
            overhead[name] = (int(per_trial.group(2)), int(per_trial.group(1)))
            print(f"{name}: overhead {overhead[name][0]} ms of a {overhead[name][1]} ms trial")
        (j, _), (p, _) = overhead["journal file"], overhead["PostgreSQL"]
        print(f"PostgreSQL against the journal file: {p - j:+d} ms of overhead per trial")
    return 0


if __name__ == "__main__":
    sys.exit(main())
