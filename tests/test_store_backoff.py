"""Specification of the shared backoff: exponential, capped, fully jittered, reproducible."""

from __future__ import annotations

import itertools
import random

import pytest

from aegis.backoff import backoff_delays


def test_backoff_delays_without_jitter_double_up_to_cap() -> None:
    delays = list(itertools.islice(backoff_delays(0.1, 1.0, jitter=False), 6))
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_backoff_delays_with_jitter_stay_within_growing_ceiling() -> None:
    delays = list(itertools.islice(backoff_delays(0.1, 1.0, random.Random(7)), 200))
    ceilings = [min(1.0, 0.1 * 2**n) for n in range(200)]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == 200  # jittered: no two clients retry in lockstep


def test_backoff_delays_same_seed_same_series() -> None:
    a = list(itertools.islice(backoff_delays(0.05, 5, random.Random(1)), 10))
    b = list(itertools.islice(backoff_delays(0.05, 5, random.Random(1)), 10))
    assert a == b


@pytest.mark.parametrize(("base", "cap"), [(0, 1), (-1, 1), (2, 1)])
def test_backoff_delays_bad_bounds_raise(base: float, cap: float) -> None:
    with pytest.raises(ValueError, match="0 < base <= cap"):
        next(backoff_delays(base, cap))
