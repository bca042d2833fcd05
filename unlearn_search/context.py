"""Run context: the explicit seed and device every computation receives (no global RNG, no ``.cuda()``)."""

from __future__ import annotations

from dataclasses import dataclass, field

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


def _mix(seed: int, offset: int) -> int:
    """A derived seed, kept below 2**63 so that chains of `RunContext.child` stay valid torch seeds (values that
    never reach the bound are unchanged, so existing derived seeds are stable)."""
    return (seed * 1_000_003 + offset) % (2**63 - 1)
