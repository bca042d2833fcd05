"""Run context: the explicit seed and device every computation receives (no global RNG, no ``.cuda()``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import UsageError

#: The device the last `select_device` call picked (the process's device, as the CLI chooses it once per command);
#: None before any. Read by the provenance tags of tracking runs (`selected_device`).
_selected: list[torch.device] = []


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; ``cpu``/``cuda``/``cuda:N`` are taken as given."""
    if name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(name)
        except RuntimeError:
            raise UsageError(f"unknown device {name!r}; valid: auto, cpu, cuda, cuda:N") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UsageError(f"device {name!r} requested but CUDA is not available; valid here: auto, cpu")
    _selected[:] = [device]
    return device


def selected_device() -> torch.device:
    """The device the last `select_device` call picked, or what ``auto`` would pick if none was selected yet."""
    if _selected:
        return _selected[0]
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class RunContext:
    """Seed and device for one computation. Derive sub-seeds with `child` so that parts stay independent."""

    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def generator(self, offset: int = 0) -> torch.Generator:
        """A CPU generator seeded from ``seed`` and ``offset`` (shuffling, noise); never the global RNG."""
        g = torch.Generator()
        g.manual_seed(_mix(self.seed, offset))
        return g

    def child(self, offset: int) -> RunContext:
        return RunContext(seed=_mix(self.seed, offset), device=self.device)

    def seeded_global_rng(self, offset: int) -> Any:
        """``with ctx.seeded_global_rng(offset):`` torch's global RNG (CPU, and the device's on CUDA) is seeded from
        ``seed`` and ``offset`` inside and restored after. For what draws from it and cannot be given a generator:
        dropout in a language model's training. Without it a run's numbers would depend on what the process did
        before (an earlier trial, another scenario)."""
        import contextlib

        @contextlib.contextmanager
        def seeded() -> Any:
            devices = [self.device] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices, device_type=self.device.type):
                torch.manual_seed(_mix(self.seed, offset))
                yield

        return seeded()


def _mix(seed: int, offset: int) -> int:
    """A derived seed, kept below 2**63 so that chains of `RunContext.child` stay valid torch seeds (values that
    never reach the bound are unchanged, so existing derived seeds are stable)."""
    return (seed * 1_000_003 + offset) % (2**63 - 1)


#: Environment variables by which a user sets the CPU thread count themselves; `leave_a_core` then does nothing.
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "UNLEARN_SEARCH_THREADS")


def leave_a_core() -> int:
    """Run torch's CPU work on all the CPUs this process may use but one (at least one); returns the count used.

    torch's default, one thread per core, makes its threads wait on each other at every operation: any other busy
    process (the MLflow writer process of a tune study, a second worker, the user's browser) then slows small models
    by 20-100x (measured on 2 cores). With one core left free the same work ran about 6% slower on an idle machine and
    gave the same numbers. ``UNLEARN_SEARCH_THREADS=<n>`` (or ``OMP_NUM_THREADS``) sets the count instead.
    """
    import os

    if os.environ.get("UNLEARN_SEARCH_THREADS", "").strip().isdigit():
        torch.set_num_threads(max(1, int(os.environ["UNLEARN_SEARCH_THREADS"])))
    elif not any(os.environ.get(k) for k in THREAD_ENV):
        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # not on Linux
            cpus = os.cpu_count() or 1
        torch.set_num_threads(max(1, min(torch.get_num_threads(), cpus - 1)))
    return torch.get_num_threads()
