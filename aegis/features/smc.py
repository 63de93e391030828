"""Smart-money concepts (SMC/ICT) computed causally: every event carries the bar it became knowable.

The rules follow the public ``smartmoneyconcepts`` package (v0.0.27) wherever it is causal, and
deliver its look-ahead events at the first bar a live trader could know them:

* **Swing high/low** (length n): bar i is a swing-high candidate when its high is the highest of
  bars i-n+1 .. i+n (a low likewise, highs take precedence), so a candidate is *confirmed* at bar
  i+n. Consecutive candidates of one type form a run; the run keeps its most extreme candidate
  (the earliest on ties), exactly the reference's de-duplication. The run's swing is *final* when
  a candidate of the other type is confirmed (`swing_known_at`). The reference also forces fake
  swings on the first and last bar; those are not reproduced.
* **Fair value gap** (three candles i-1, i, i+1): bullish when candle i closes up and
  high[i-1] < low[i+1] (gap = [high[i-1], low[i+1]]), bearish mirror-wise. Known at bar i+1.
  Mitigated at the first bar j >= i+2 whose low reaches the top (bullish) or whose high reaches
  the bottom (bearish). Identical to the reference, which is causal here.
* **Market structure** (the reference's four-swing patterns on final swings L,H,L,H or H,L,H,L):
  higher low + higher high is a bullish BOS, lower low then higher high a bullish CHoCH (mirror
  for bearish); the level is the older of the two middle swings, and the event happens at the
  first close beyond that level from its swing bar + 2 on. Knowable once the fourth swing is final
  and the level is broken (`structure_known_at`); the trend state is the direction of the last
  delivered event. The reference later erases events superseded by later breaks; a live trader
  cannot, so they stay here.
* **Order block**: when a close crosses the last known swing high (final, or the current run's
  candidate), the lowest candle between that swing and the crossing (last one on ties) is a
  bullish order block [low, high]; mirror for bearish. It becomes a breaker when a low trades
  below its bottom and is removed when a later high trades above its top (reference rules; the
  reference only uses swings it knows from the future and hides removed blocks).
* **Liquidity pool**: final swings of one type within `band` of the first one's level group into
  a pool (each swing joins the earliest pool still open to it); a pool of 2+ swings is liquidity,
  knowable when its second swing is final. It is swept at the first bar after its first swing
  whose high (low) reaches level + band (level - band). The reference's band is 1% of the whole
  series' range (look-ahead); here band = band_abs + band_frac * level, causal for band_abs = 0.
  A sweep whose close returns inside the pool's average level is a *reclaim*.

Capacity limits (documented divergence): 16 open gaps, order blocks and pools and 8 pending
structure events per series (the oldest is dropped), 256 bars of look-back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aegis.features import _smc_nb as nb
from aegis.features.indicators import IndicatorInputError, _same_length, _series

_FIELDS = (
    *("swing_hl", "swing_level", "swing_known_at"),
    *("fvg", "fvg_top", "fvg_bottom", "fvg_mitigated_index"),
    *("ob", "ob_top", "ob_bottom", "ob_mitigated_index", "ob_known_at", "ob_reset_at"),
    *("bos", "choch", "structure_level", "structure_broken_index", "structure_known_at"),
    *("liquidity", "liquidity_level", "liquidity_end", "liquidity_swept", "liquidity_known_at"),
)


@dataclass(frozen=True)
class SmcAnalysis:
    """Per-bar SMC results indexed like the reference (NaN where nothing), plus knowable bars.

    `events` is the raw log: `event_bar[k]` is the bar at whose close event k became known and
    `events[k]` = (kind, idx, dir, a, b) with the EV_* kinds of ``_smc_nb``.
    """

    swing_hl: np.ndarray
    swing_level: np.ndarray
    swing_known_at: np.ndarray
    fvg: np.ndarray
    fvg_top: np.ndarray
    fvg_bottom: np.ndarray
    fvg_mitigated_index: np.ndarray
    ob: np.ndarray
    ob_top: np.ndarray
    ob_bottom: np.ndarray
    ob_mitigated_index: np.ndarray
    ob_known_at: np.ndarray
    ob_reset_at: np.ndarray
    bos: np.ndarray
    choch: np.ndarray
    structure_level: np.ndarray
    structure_broken_index: np.ndarray
    structure_known_at: np.ndarray
    liquidity: np.ndarray
    liquidity_level: np.ndarray
    liquidity_end: np.ndarray
    liquidity_swept: np.ndarray
    liquidity_known_at: np.ndarray
    event_bar: np.ndarray
    events: np.ndarray


def analyze(
    open: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    swing_length: int = 5,
    band_abs: float = 0.0,
    band_frac: float = 0.002,
) -> SmcAnalysis:
    """Run every SMC rule over one bar series (oldest first) and return per-bar results."""
    names = ("open", "high", "low", "close")
    o, h, lo, c = (_series(n, a) for n, a in zip(names, (open, high, low, close), strict=True))
    _same_length(open=o, high=h, low=lo, close=c)
    if isinstance(swing_length, bool) or not isinstance(swing_length, (int, np.integer)):
        raise IndicatorInputError(f"swing_length must be an integer, got {swing_length!r}")
    if not 1 <= swing_length <= nb.MAX_SWING:
        raise IndicatorInputError(f"swing_length must be in 1..{nb.MAX_SWING}, got {swing_length}")
    if not (np.isfinite(band_abs) and np.isfinite(band_frac)) or band_abs < 0 or band_frac < 0:
        raise IndicatorInputError("band_abs and band_frac must be finite and >= 0")
    bars, ev = nb.smc_run_nb(o, h, lo, c, int(swing_length), float(band_abs), float(band_frac))
    out = {name: np.full(o.shape[0], np.nan) for name in _FIELDS}
    for t, (kind, idx, d, a, b) in zip(bars.tolist(), ev.tolist(), strict=True):
        i = int(idx)
        if kind == nb.EV_SWING:
            out["swing_hl"][i], out["swing_level"][i], out["swing_known_at"][i] = d, a, t
        elif kind == nb.EV_FVG:
            out["fvg"][i], out["fvg_top"][i], out["fvg_bottom"][i] = d, a, b
        elif kind == nb.EV_FVG_MITIGATED:
            out["fvg_mitigated_index"][i] = t
        elif kind == nb.EV_OB:
            out["ob"][i], out["ob_top"][i], out["ob_bottom"][i] = d, a, b
            out["ob_known_at"][i] = t
            out["ob_mitigated_index"][i] = np.nan
            out["ob_reset_at"][i] = np.nan
        elif kind == nb.EV_OB_BREAKER:
            out["ob_mitigated_index"][i] = a
        elif kind == nb.EV_OB_RESET:
            out["ob_reset_at"][i] = t
        elif kind == nb.EV_STRUCT:
            key = "bos" if abs(d) == 1 else "choch"
            out[key][i] = np.sign(d)
            out["structure_level"][i], out["structure_broken_index"][i] = a, b
            out["structure_known_at"][i] = t
        elif kind == nb.EV_POOL:
            # Every join updates the pool; the first join (second member) makes it liquidity.
            if np.isnan(out["liquidity"][i]):
                out["liquidity"][i], out["liquidity_known_at"][i] = d, t
            out["liquidity_level"][i], out["liquidity_end"][i] = a, b
        elif kind == nb.EV_SWEEP:
            out["liquidity_swept"][i] = a
    pools = ~np.isnan(out["liquidity"])
    out["liquidity_swept"][~pools] = np.nan
    return SmcAnalysis(**out, event_bar=bars, events=ev)
