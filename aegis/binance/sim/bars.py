"""Pure per-bar math: the intra-bar price path, partial (in-progress) bars, number formats.

The recordings hold only OHLCV per minute. In-progress kline updates need prices *inside* the
minute, so the simulator walks a fixed path through the bar's extremes: open → low → high →
close for a rising bar, open → high → low → close for a falling one, three equal-time segments.
The final (``x=true``) update always carries the recorded values unchanged.
"""

from __future__ import annotations

import math

SEGMENTS = 3


def path_points(o: float, h: float, low: float, c: float) -> tuple[float, float, float, float]:
    """Return the four vertices of the intra-bar path."""
    return (o, low, h, c) if c >= o else (o, h, low, c)


def price_on_path(points: tuple[float, float, float, float], phi: float) -> float:
    """Linear interpolation along the path at fraction ``phi`` of the minute (0..1)."""
    if phi <= 0.0:
        return points[0]
    if phi >= 1.0:
        return points[3]
    pos = phi * SEGMENTS
    seg = int(pos)
    frac = pos - seg
    return points[seg] + (points[seg + 1] - points[seg]) * frac


def range_between(
    points: tuple[float, float, float, float], phi0: float, phi1: float
) -> tuple[float, float]:
    """Lowest and highest price the path visits between ``phi0`` and ``phi1``."""
    visited = [price_on_path(points, phi0), price_on_path(points, phi1)]
    for j in range(1, SEGMENTS):
        if phi0 < j / SEGMENTS < phi1:
            visited.append(points[j])
    return min(visited), max(visited)


def partial_ohlc(
    o: float, h: float, low: float, c: float, phi: float, decimals: int
) -> tuple[float, float, float, float]:
    """OHLC of the bar as seen at fraction ``phi`` (1 → the recorded values exactly)."""
    if phi >= 1.0:
        return o, h, low, c
    pts = path_points(o, h, low, c)
    cur = round(price_on_path(pts, phi), decimals)
    visited = [pts[j] for j in range(SEGMENTS + 1) if j / SEGMENTS <= phi]
    visited.append(cur)
    return o, max(visited), min(visited), cur


def fmt8(x: float) -> str:
    """Binance's 8-decimal string for a price or quantity."""
    return f"{x:.8f}"


def decimals_of(step: str) -> int:
    """Number of decimals of a tick/step string such as ``"0.01000000"`` (→ 2)."""
    value = float(step)
    if value <= 0:
        return 8
    return max(0, min(8, round(-math.log10(value))))
