"""The one exception type for bad user input.

Everything a user can get wrong (an unknown name, a value out of range, an unreachable tracking server) raises
`UsageError` with a message that names the bad value and the valid choices. The command-line layer prints that
message as one line and exits non-zero; library callers can catch it like any `ValueError`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


class UsageError(ValueError):
    """Bad user input; the message is one line naming the bad value and what would be valid."""


def check_range(
    name: str,
    value: float,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raise `UsageError` unless ``low (<|<=) value (<|<=) high`` and ``value`` is finite (NaN and ±inf are never
    valid: an unbounded side means any finite number); the message states the valid interval."""
    bad = not math.isfinite(value)
    if low is not None:
        bad = bad or (value <= low if low_open else value < low)
    if high is not None:
        bad = bad or (value >= high if high_open else value > high)
    if bad:
        lo = "-inf" if low is None else _number(low)
        hi = "inf" if high is None else _number(high)
        interval = f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
        finite = "" if math.isfinite(value) else "a finite number in "
        raise UsageError(f"{name}={value!r} is out of range; valid: {finite}{interval}")


def _number(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def check_choice(name: str, value: str, choices: Iterable[str]) -> None:
    """Raise `UsageError` unless ``value`` is one of ``choices``."""
    valid = sorted(choices)
    if value not in valid:
        raise UsageError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
