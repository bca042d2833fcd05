"""Real services for the scale-out tests, started by the tests themselves on 127.0.0.1: a PostgreSQL server from
Debian's ``postgresql`` package (installed by .ci/run) and an MLflow tracking server backed by it.

Why Debian's server and not pytest-postgresql or pgserver: it is the server a platform team runs, and ``initdb``
refuses to run as root (CI runs as root), which pytest-postgresql cannot work around; here the server runs as the
package's ``postgres`` user when the tests run as root. Password authentication (scram) is on, so the tests exercise
the password path a cluster uses (``${VAR}`` in a storage URL, redaction in errors).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PASSWORD = "s3cret-pw"  # a test server's; the URLs the tests pass around carry it as ${UNLEARN_TEST_PGPASSWORD}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def postgres_bin() -> Path | None:
    """The directory of Debian's PostgreSQL server binaries (newest version), if installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _run(cmd: list[str]) -> None:
    out = subprocess.run(_as_postgres(cmd), capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed: {(out.stderr or out.stdout)[-2000:]}")


@contextmanager
def postgres() -> Iterator[str]:
    """A PostgreSQL server on a free port; yields ``postgresql://postgres:<password>@127.0.0.1:<port>`` (append a
    database name). Its data lives in a fresh folder of its own under the system's temporary directory (pytest's
    are private to root, and the server runs as ``postgres``); stopped, fast, and removed on exit."""
    import tempfile

    bindir = postgres_bin()
    if bindir is None:
        raise RuntimeError("Debian's postgresql is not installed (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="unlearn_search_pg_"))
    data, port = root / "pgdata", free_port()
    pwfile = root / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(pwfile, "postgres")
    try:
        _run([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=scram-sha-256", f"--pwfile={pwfile}",
              "-E", "UTF8"])
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off"
        _run([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "postgres.log"), "-o", options, "-w",
              "start"])
        try:
            yield f"postgresql://postgres:{PASSWORD}@127.0.0.1:{port}"
        finally:
            subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                           capture_output=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def create_database(server: str, name: str) -> str:
    """A new database on the server; its URL."""
    import psycopg

    conn = psycopg.connect(f"{server}/postgres", autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return f"{server}/{name}"


@contextmanager
def mlflow_server(backend: str, root: Path) -> Iterator[str]:
    """``mlflow server`` with ``backend`` as its store and artifacts served through it (``--serve-artifacts``) from
    ``root/artifacts``, on a free port; yields its URL. Stopped with its workers on exit."""
    with _mlflow("server", ["--backend-store-uri", backend, "--artifacts-destination", str(root / "artifacts"),
                            "--serve-artifacts", "--workers", "2"], root) as url:
        yield url


@contextmanager
def mlflow_ui(store: str, root: Path) -> Iterator[str]:
    """``mlflow ui`` over the tracking store ``store`` (run in ``root``), on a free port; yields its URL."""
    with _mlflow("ui", ["--backend-store-uri", store], root) as url:
        yield url


@contextmanager
def _mlflow(command: str, args: list[str], root: Path) -> Iterator[str]:
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    log_path = root / f"mlflow_{command}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", command, *args, "--host", "127.0.0.1", "--port",
                                 str(port)], cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    urllib.request.urlopen(f"{url}/health", timeout=2)
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"mlflow {command} did not start: {log_path.read_text()[-3000:]}") from None
                    time.sleep(0.5)
            yield url
        finally:
            stop(proc)


def stop(proc: subprocess.Popen) -> None:  # type: ignore[type-arg]
    """End a process started with ``start_new_session=True`` and all it started (SIGTERM, then SIGKILL)."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
