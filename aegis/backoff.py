"""Exponential backoff with full jitter, as one small reusable generator.

``backoff_delays(base, cap)`` yields ``uniform(0, min(cap, base * 2**n))`` for n = 0, 1, 2, …
forever ("full jitter": retrying clients spread out instead of stampeding a recovering server).
The caller owns the loop, the clock and the sleep, so tests drive it with a seeded ``Random``
and a fake sleep.
"""

from __future__ import annotations

import random
from collections.abc import Iterator


def backoff_delays(
    base: float, cap: float, rng: random.Random | None = None, *, jitter: bool = True
) -> Iterator[float]:
    """Yield an endless series of retry delays in seconds, growing from ``base`` to ``cap``."""
    if base <= 0 or cap < base:
        raise ValueError(f"need 0 < base <= cap, got base={base} cap={cap}")
    draw = (rng or random.Random()).uniform
    ceiling = base
    while True:
        yield draw(0.0, ceiling) if jitter else ceiling
        ceiling = min(cap, ceiling * 2)
