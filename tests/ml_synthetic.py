"""Synthetic experience rows for the ML tests: a planted signal, or pure noise."""

from __future__ import annotations

import numpy as np

NAMES = tuple(f"f{i}" for i in range(12))
T0 = 1_680_000_000_000
STEP = 300_000  # one candidate every 5 minutes


def synthetic_rows(n: int, seed: int, signal: bool):
    """Return (features, net %, entry ms, exit ms); net is bounded like real exit-rule labels.

    With ``signal`` the net return rises with f0 and jumps when f1 > 0.5: candidates in the top
    of f0 are profitable after fees, the average candidate is not. Without it, the label is
    independent of every feature and loses the round-trip fees on average.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 12))
    noise = rng.normal(scale=0.7, size=n)
    net = 0.55 * x[:, 0] + 0.35 * (x[:, 1] > 0.5) - 0.35 + noise if signal else -0.24 + noise
    net = np.clip(net, -1.25, 1.75)
    entry = T0 + np.arange(n, dtype=np.int64) * STEP
    exit_ = entry + rng.integers(1, 49, size=n) * 60_000 * 5
    return x, net, entry, exit_
