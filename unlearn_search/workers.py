"""Who is running what: a worker identity that lets a resumed study tell a dead worker's leftovers from a live one's.

A worker is one process, identified as ``host:pid:start`` (``start`` = the process's start time in clock ticks since
boot, from ``/proc/<pid>/stat`` on Linux, so that a recycled pid is not mistaken for the original process). Trials
and MLflow runs record the worker that owns them; when a study is opened again, what a worker of *this* host left
RUNNING is known dead if that process no longer exists. A worker on another host cannot be checked from here: for
those, database storages have Optuna's heartbeat (a trial whose worker stopped beating is failed after a grace
period), and the journal file, which serves one machine, has none.
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache


def _stat(pid: int) -> list[str]:
    """Fields 3.. of ``/proc/<pid>/stat`` (state first), [] where unknown (not Linux) or the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return []
    # the command name (field 2) may contain spaces and parentheses: split after its closing parenthesis
    return stat[stat.rfind(")") + 2:].split()


def _start_time(pid: int) -> str:
    """The process's start time (clock ticks since boot, field 22), '' where unknown."""
    fields = _stat(pid)
    return fields[19] if len(fields) > 19 else ""


@lru_cache(maxsize=1)
def worker_id() -> str:
    """This process as ``host:pid:start``."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_time(pid)}"


def is_dead(worker: str) -> bool:
    """True only when ``worker`` ran on this host and that process is gone (or its pid now belongs to another
    process); False when it is alive, runs elsewhere, or cannot be judged."""
    host, _, rest = worker.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by someone else
        pass
    fields = _stat(pid)
    if fields and fields[0] in ("Z", "X"):  # killed, not yet reaped by its parent
        return True
    return bool(start) and len(fields) > 19 and fields[19] != start
