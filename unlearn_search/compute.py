"""Compute accounting in example-passes (docs/paper.md section 2).

One forward+backward of one example costs 1 unit; a forward-only pass costs `FORWARD_ONLY_COST`. Retraining from
scratch costs ``epochs * n_retain`` units, and an unlearning method given budget ``b`` may consume at most
``b * retrain cost``. Methods charge the meter before each step and stop when it would overrun.
"""

from __future__ import annotations

import math

#: Cost of a forward-only pass relative to forward+backward (backward is roughly twice a forward).
FORWARD_ONLY_COST = 1.0 / 3.0


def retrain_cost(epochs: int, n_retain: int) -> float:
    """Compute of retraining from scratch on ``n_retain`` examples for ``epochs`` epochs, in example-passes."""
    return float(epochs * n_retain)


class ComputeMeter:
    """Counts example-passes against an optional limit.

    ``can_afford(n)`` asks whether ``n`` more units fit; ``charge_*`` records consumption. A method that checks
    ``can_afford`` before every batch overruns by less than one batch.
    """

    def __init__(self, limit: float = math.inf) -> None:
        if limit < 0:
            raise ValueError(f"compute limit must be >= 0, got {limit}")
        self.limit = float(limit)
        self.used = 0.0

    def charge_train(self, n_examples: int) -> None:
        """A forward+backward over ``n_examples``."""
        self.used += float(n_examples)

    def charge_forward(self, n_examples: int) -> None:
        """A forward-only pass over ``n_examples``."""
        self.used += FORWARD_ONLY_COST * n_examples

    def can_afford(self, units: float) -> bool:
        return self.used + units <= self.limit + 1e-9

    @property
    def remaining(self) -> float:
        return max(self.limit - self.used, 0.0)

    @property
    def exhausted(self) -> bool:
        return self.used >= self.limit - 1e-9
