"""SMC rules: each on a hand-made bar sequence, then against `smartmoneyconcepts` on real data.

Real-data claims tested here: swings and FVGs agree with the reference bar for bar (apart from
the reference's fake first/last-bar swings and the last, still-open swing run); every reference
BOS/CHoCH and liquidity pool is delivered with the same level, broken/swept index, at the bar it
became knowable; order blocks agree where both use the same swing (see test docstring).
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
import pytest
from features_data import klines

from aegis.features import _smc_nb as nb
from aegis.features import smc
from aegis.features.indicators import IndicatorInputError


def _path(pivots: list[float], leg: int = 4) -> tuple[np.ndarray, ...]:
    """Doji bars (open == close) walking linearly between pivots; high/low = close +- 0.5."""
    mid = [pivots[0]]
    for a, b in itertools.pairwise(pivots):
        mid.extend(np.linspace(a, b, leg + 1)[1:])
    m = np.array(mid)
    return m.copy(), m + 0.5, m - 0.5, m.copy()


def _pivot_index(k: int, leg: int = 4) -> int:
    return k * leg


def test_swing_confirmed_n_bars_later_and_final_when_opposite_swing_confirmed():
    o, h, lo, c = _path([10, 20, 12, 22, 15, 30])
    a = smc.analyze(o, h, lo, c, swing_length=2)
    # The low at 16 is confirmed but not final: no high candidate follows it in the data.
    assert np.flatnonzero(~np.isnan(a.swing_hl)).tolist() == [4, 8, 12]
    assert a.swing_hl[[4, 8, 12]].tolist() == [1, -1, 1]
    assert a.swing_level[4] == 20.5 and a.swing_level[8] == 11.5
    # The high at 4 is final when the low at 8 is confirmed, n = 2 bars after that low.
    assert a.swing_known_at[[4, 8, 12]].tolist() == [10, 14, 18]


def test_swing_run_of_two_highs_keeps_the_higher_one():
    # Highs at 4 (20) and 8 (25) with no swing low between (lows only rise until bar 12).
    m = np.array([10, 12, 14, 17, 20, 19.8, 21, 23, 25, 24, 18, 12, 8, 9, 11, 13, 15], float)
    lo = m - 0.5
    lo[:11] = np.linspace(5, 7, 11)  # strictly rising lows: no swing-low candidate early
    a = smc.analyze(m, m + 0.5, lo, m, swing_length=2)
    highs = np.flatnonzero(a.swing_hl == 1).tolist()
    assert highs == [8]
    assert a.swing_known_at[8] > 12  # only final once the low near bar 12 is confirmed


def test_fvg_bullish_three_candle_gap_known_next_bar_and_mitigated_on_retouch():
    o = np.array([9.5, 10.0, 12.0, 12.5, 11.5])
    c = np.array([9.8, 12.0, 13.0, 12.2, 11.8])
    h = np.array([10.0, 12.5, 14.0, 12.9, 12.0])
    lo = np.array([9.0, 9.5, 11.0, 12.0, 10.9])
    a = smc.analyze(o, h, lo, c, swing_length=1)
    assert a.fvg[1] == 1 and a.fvg_top[1] == 11.0 and a.fvg_bottom[1] == 10.0
    assert a.fvg_mitigated_index[1] == 4  # low 10.9 <= top 11 at bar 4, not at bar 3
    fvg_events = a.events[a.events[:, 0] == nb.EV_FVG]
    assert a.event_bar[a.events[:, 0] == nb.EV_FVG].tolist() == [2] and fvg_events[0, 1] == 1


def test_fvg_bearish_gap_mirror():
    o = np.array([12.0, 12.0, 10.0, 9.0])
    c = np.array([12.2, 10.0, 9.0, 9.5])
    h = np.array([12.5, 12.1, 10.5, 11.2])
    lo = np.array([11.5, 9.8, 8.5, 8.9])
    a = smc.analyze(o, h, lo, c, swing_length=1)
    assert a.fvg[1] == -1 and a.fvg_top[1] == 11.5 and a.fvg_bottom[1] == 10.5
    assert a.fvg_mitigated_index[1] == 3


def test_structure_higher_low_higher_high_is_bullish_bos_known_when_fourth_swing_final():
    o, h, lo, c = _path([12, 10, 20, 15, 25, 18, 24])
    a = smc.analyze(o, h, lo, c, swing_length=2)
    # Swings: L(10)@4, H(20)@8, L(15)@12, H(25)@16 -> bullish BOS at H(20), level 20.5.
    assert a.bos[8] == 1 and np.isnan(a.choch[8]) and a.structure_level[8] == 20.5
    broken = int(a.structure_broken_index[8])
    assert c[broken] > 20.5 and (c[10:broken] <= 20.5).all()
    assert a.structure_known_at[8] == max(broken, a.swing_known_at[16])


def test_structure_lower_low_then_higher_high_is_bullish_choch():
    o, h, lo, c = _path([18, 15, 20, 10, 25, 18, 24])
    a = smc.analyze(o, h, lo, c, swing_length=2)
    assert a.choch[8] == 1 and np.isnan(a.bos[8]) and a.structure_level[8] == 20.5


def test_structure_bearish_bos_mirror():
    o, h, lo, c = _path([28, 30, 20, 25, 15, 22, 16])
    a = smc.analyze(o, h, lo, c, swing_length=2)
    assert a.bos[8] == -1 and a.structure_level[8] == 19.5


def test_order_block_bullish_is_lowest_candle_before_the_break_then_breaker_then_reset():
    # Break of the swing high at 20 during the leg 15 -> 25: the OB is the candle at the 15 low.
    o, h, lo, c = _path([12, 10, 20, 15, 25, 13, 30])
    a = smc.analyze(o, h, lo, c, swing_length=2)
    assert a.ob[12] == 1 and a.ob_top[12] == 15.5 and a.ob_bottom[12] == 14.5
    assert c[int(a.ob_known_at[12])] > 20.5  # formed on the close above the swing high
    # The leg down to 13 trades below 14.5 (breaker); the leg up to 30 above 15.5 (removed).
    assert not np.isnan(a.ob_mitigated_index[12]) and not np.isnan(a.ob_reset_at[12])


def test_liquidity_equal_highs_pool_swept_and_reclaimed_is_bearish_sweep():
    o, h, lo, c = _path([12, 10, 20, 15, 20.01, 14, 16])
    spike = np.array([17.0]), np.array([21.0]), np.array([16.5]), np.array([18.0])
    o, h, lo, c = (np.r_[x, s] for x, s in zip((o, h, lo, c), spike, strict=True))
    st = nb.new_state_nb()
    for i in range(o.size):
        nb.smc_step_nb(st, o[i], h[i], lo[i], c[i], 2, 0.0, 0.001)
    assert st[nb.LAST_SWEEP] == -1 and st[nb.LAST_SWEEP_BAR] == o.size - 1
    a = smc.analyze(o, h, lo, c, swing_length=2, band_frac=0.001)
    assert a.liquidity[8] == 1 and a.liquidity_end[8] == 16
    assert a.liquidity_level[8] == pytest.approx((20.5 + 20.51) / 2)
    assert a.liquidity_swept[8] == o.size - 1
    assert a.liquidity_known_at[8] == a.swing_known_at[16]


def test_analyze_bad_input_raises():
    x = np.ones(10)
    with pytest.raises(IndicatorInputError, match=r"swing_length must be in 1\.\.32"):
        smc.analyze(x, x, x, x, swing_length=0)
    with pytest.raises(IndicatorInputError, match="differ in length"):
        smc.analyze(x, x, x, np.ones(9))
    with pytest.raises(IndicatorInputError, match="band_abs and band_frac"):
        smc.analyze(x, x, x, x, band_frac=-1.0)


# ---------------------------------------------------------------- real data vs the reference


@pytest.fixture(scope="module", params=["BTCUSDT", "ETHUSDT"])
def real(request: pytest.FixtureRequest):
    from smartmoneyconcepts import smc as ref

    b = klines(request.param, "5m")
    n_bars, n = 4000, 5
    df = pd.DataFrame({k: b[k][:n_bars] for k in ("open", "high", "low", "close", "volume")})
    ours = smc.analyze(df.open.values, df.high.values, df.low.values, df.close.values, n, 0.0, 0.0)
    return ref, df, n, ours


def _reference(call, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return call(*args, **kwargs)


def test_real_swings_equal_reference_except_its_fake_endpoints(real):
    ref, df, n, ours = real
    theirs = _reference(ref.swing_highs_lows, df, n)["HighLow"].to_numpy().copy()
    theirs[[0, -1]] = np.nan  # the reference forces a swing on the first and last bar
    last_final = np.flatnonzero(~np.isnan(ours.swing_hl)).max()
    theirs[last_final + 1 :] = np.nan  # our last run is not final yet at the end of the data
    np.testing.assert_array_equal(ours.swing_hl, theirs)
    i = np.flatnonzero(~np.isnan(ours.swing_hl))
    assert (ours.swing_known_at[i] >= i + n).all()


def test_real_fvg_equal_reference_bar_for_bar(real):
    ref, df, _, ours = real
    theirs = _reference(ref.fvg, df)
    np.testing.assert_array_equal(ours.fvg, theirs["FVG"].to_numpy())
    np.testing.assert_array_equal(ours.fvg_top, theirs["Top"].to_numpy())
    np.testing.assert_array_equal(ours.fvg_bottom, theirs["Bottom"].to_numpy())
    mit = theirs["MitigatedIndex"].to_numpy()
    np.testing.assert_array_equal(ours.fvg_mitigated_index, np.where(mit == 0, np.nan, mit))


def _their_swings(ours: smc.SmcAnalysis) -> pd.DataFrame:
    # The reference's structure, OB and liquidity rules take swings as input: give them ours
    # (equal to theirs, without the fake endpoints) so each rule is compared on its own.
    return pd.DataFrame({"HighLow": ours.swing_hl, "Level": ours.swing_level})


def test_real_bos_choch_every_reference_event_delivered_when_knowable(real):
    ref, df, _, ours = real
    theirs = _reference(ref.bos_choch, df, _their_swings(ours), close_break=True)
    codes = np.where(theirs["BOS"].notna(), theirs["BOS"], 2 * theirs["CHOCH"])
    mine = np.where(~np.isnan(ours.bos), ours.bos, 2 * ours.choch)
    ref_idx = np.flatnonzero(~np.isnan(codes))
    assert ref_idx.size > 50
    np.testing.assert_array_equal(mine[ref_idx], codes[ref_idx])
    np.testing.assert_array_equal(
        ours.structure_broken_index[ref_idx], theirs["BrokenIndex"].to_numpy()[ref_idx]
    )
    np.testing.assert_allclose(
        ours.structure_level[ref_idx], theirs["Level"].to_numpy()[ref_idx], rtol=1e-6
    )
    swings = np.flatnonzero(~np.isnan(ours.swing_hl))
    for i in np.flatnonzero(~np.isnan(mine)):
        fourth = swings[np.searchsorted(swings, i) + 2]
        assert ours.structure_known_at[i] == max(
            ours.structure_broken_index[i], ours.swing_known_at[fourth]
        )
    # Extra events are the ones the reference erases afterwards because a later break superseded
    # them, which nobody can know live.
    assert (np.flatnonzero(~np.isnan(mine)).size - ref_idx.size) < 0.3 * ref_idx.size


def test_real_liquidity_equals_reference_with_its_band_and_known_at_second_swing(real):
    ref, df, n, _ = real
    band = (df.high.max() - df.low.min()) * 0.01  # the reference's whole-series band, injected
    ours = smc.analyze(df.open.values, df.high.values, df.low.values, df.close.values, n, band, 0.0)
    theirs = _reference(ref.liquidity, df, _their_swings(ours), range_percent=0.01)
    np.testing.assert_array_equal(ours.liquidity, theirs["Liquidity"].to_numpy())
    pools = np.flatnonzero(~np.isnan(ours.liquidity))
    assert pools.size > 30
    np.testing.assert_allclose(
        ours.liquidity_level[pools], theirs["Level"].to_numpy()[pools], rtol=1e-6
    )
    np.testing.assert_array_equal(ours.liquidity_end[pools], theirs["End"].to_numpy()[pools])
    swept = theirs["Swept"].to_numpy()[pools]
    np.testing.assert_array_equal(ours.liquidity_swept[pools], np.where(swept == 0, np.nan, swept))
    swings = np.flatnonzero(~np.isnan(ours.swing_hl))
    for p in pools:  # known when the pool's second member swing became final
        same = swings[(swings > p) & (ours.swing_hl[swings] == ours.liquidity[p])]
        second = same[np.searchsorted(same, p)] if same.size else -1
        assert ours.liquidity_known_at[p] >= ours.swing_known_at[second] >= second


def test_real_order_blocks_reference_blocks_found_with_same_zone(real):
    """The reference keeps only blocks that survive to the end and anchors each on a swing it
    knows from the future; we form blocks on the swing known at the crossing bar. Where both use
    the same swing the block is identical, so nearly every surviving reference block is ours."""
    ref, df, _, ours = real
    theirs = _reference(ref.ob, df, _their_swings(ours))
    idx = np.flatnonzero(theirs["OB"].notna())
    assert idx.size > 5
    same = (
        (ours.ob[idx] == theirs["OB"].to_numpy()[idx])
        & np.isclose(ours.ob_top[idx], theirs["Top"].to_numpy()[idx], rtol=1e-6)
        & np.isclose(ours.ob_bottom[idx], theirs["Bottom"].to_numpy()[idx], rtol=1e-6)
    )
    assert same.mean() >= 0.9, (same.sum(), idx.size)
