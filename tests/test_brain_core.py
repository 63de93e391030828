"""The brain core on real recorded bars: live == batch, shadow labels, warm-up, bad bars."""

from __future__ import annotations

import numpy as np
import pytest
from features_data import klines

from aegis.features import feature_matrix
from aegis.features.candidates import ema_crossover, smc_long
from aegis.ml.labels import ExitRules, entry_times_for, label_candidates
from aegis.ml.model import ModelParams, ReturnModel
from aegis.ml.registry import ActiveModel
from aegis.records import BAR_CLOSED, BAR_DTYPE
from aegis.risk.brain_core import BrainConfig, BrainCore, SymbolSeries, decide_series
from aegis.risk.decision import DECISION_REPLAYED, SIGNAL_DTYPE

SYMBOLS = {1: "BTCUSDT", 2: "ETHUSDT", 3: "DOGEUSDT"}
N_MIN = 7000  # ~4.9 days of each symbol (includes the recorded 2023-03-24 gap)
COLS = ("open_time", "open", "high", "low", "close", "volume")


def series() -> list[SymbolSeries]:
    return [
        SymbolSeries(sid, *(klines(name)[c][:N_MIN] for c in COLS)) for sid, name in SYMBOLS.items()
    ]


def ring_bars(ser: list[SymbolSeries]) -> np.ndarray:
    """All bars as the feed publishes them: BAR_DTYPE, closed, minute by minute."""
    out = []
    for s in ser:
        b = np.zeros(len(s.open_time_ms), BAR_DTYPE)
        b["open_time_ms"], b["symbol_id"], b["flags"] = s.open_time_ms, s.symbol_id, BAR_CLOSED
        b["recv_ns"] = 0
        for c in ("open", "high", "low", "close", "volume"):
            b[c] = getattr(s, c)
        out.append(b)
    bars = np.concatenate(out)
    return bars[np.lexsort((bars["symbol_id"], bars["open_time_ms"]))]


def minutes(bars: np.ndarray) -> list[np.ndarray]:
    cuts = np.flatnonzero(np.diff(bars["open_time_ms"])) + 1
    return np.split(bars, cuts)


def run_live(core: BrainCore, bars: np.ndarray, model=None):
    steps = [core.on_bars(m, model) for m in minutes(bars)]
    return steps


def concat(steps, field):
    parts = [getattr(s, field) for s in steps]
    return np.concatenate(parts) if parts else np.zeros(0, SIGNAL_DTYPE)


def assert_same_records(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and len(a) == len(b)
    for name in a.dtype.names:
        assert np.array_equal(a[name], b[name], equal_nan=a[name].dtype.kind == "f"), name


@pytest.fixture(scope="module")
def model() -> ActiveModel:
    b = klines("SOLUSDT")
    _, feats, names = feature_matrix(*(b[c][:20000] for c in COLS))
    label = np.nan_to_num(feats[:, 7] - 50.0) / 20 + np.nan_to_num(feats[:, 6])  # planted, varied
    m = ReturnModel.fit(feats, label, names, ModelParams(num_boost_round=20))
    return ActiveModel(version=5, model=m, metrics={"holdout": {"hit_rate_taken": 0.55}})


@pytest.mark.parametrize("rule", [smc_long(), ema_crossover(10, 30)], ids=lambda r: r.name)
def test_brain_core_fed_bar_by_bar_equals_batch_path_cold_start(rule):
    config = BrainConfig(rule=rule, capacity=8)
    ser = series()
    batch_signals, batch_intents = decide_series(ser, config, None)
    steps = run_live(BrainCore(config, SYMBOLS), ring_bars(ser))
    assert len(batch_signals) > 20 and len(batch_intents) > 10
    assert_same_records(concat(steps, "signals"), batch_signals)
    assert_same_records(concat(steps, "intents"), batch_intents)


def test_brain_core_fed_bar_by_bar_equals_batch_path_with_a_champion(model):
    config = BrainConfig(capacity=8)
    ser = series()
    batch_signals, batch_intents = decide_series(ser, config, model)
    steps = run_live(BrainCore(config, SYMBOLS), ring_bars(ser), model)
    live = concat(steps, "signals")
    assert_same_records(live, batch_signals)
    assert_same_records(concat(steps, "intents"), batch_intents)
    assert (live["model_version"] == 5).all() and np.isfinite(live["predicted_return_pct"]).all()
    assert 0 < len(batch_intents) < len(batch_signals)  # the threshold filtered some out


def test_brain_core_shadow_labels_equal_labels_computed_directly():
    rules = ExitRules(stop_pct=0.8, take_pct=1.2, trailing_pct=0.5, max_hold_minutes=120)
    config = BrainConfig(exit_rules=rules, capacity=8)
    ser = series()
    core = BrainCore(config, SYMBOLS)
    steps = run_live(core, ring_bars(ser))
    signals = concat(steps, "signals")
    labels = [s.labels for s in steps if len(s.labels)]
    got = {}
    for lab in labels:
        for i in range(len(lab)):
            key = (core.name_of_index(lab.symbol_index[i]), int(lab.decision_time_ms[i]))
            got[key] = (lab.net_pct[i], lab.gross_pct[i], lab.exit_time_ms[i], lab.entry_time_ms[i],
                        lab.reason[i], lab.features[i])  # fmt: skip
    complete = 0
    for s in ser:
        mine = signals[signals["symbol_id"] == s.symbol_id]
        want = label_candidates(s.open_time_ms, s.open, s.high, s.low, s.close,
                                entry_times_for(mine["decision_time_ms"], "5m"), rules)  # fmt: skip
        for j in range(len(mine)):
            key = (SYMBOLS[s.symbol_id], int(mine["decision_time_ms"][j]))
            if not want.complete[j]:
                assert key not in got
                continue
            complete += 1
            net, gross, exit_t, entry_t, reason, feats = got[key]
            assert (net, gross, exit_t, entry_t, reason) == (want.net_pct[j], want.gross_pct[j],
                want.exit_time_ms[j], want.entry_time_ms[j], want.reason[j])  # fmt: skip
            assert np.array_equal(feats, mine["features"][j], equal_nan=True)
    assert complete == len(got) and complete > 20
    assert core.labeler.pending == len(signals) - complete


@pytest.mark.parametrize("rule", [smc_long(), ema_crossover(10, 30)], ids=lambda r: r.name)
def test_brain_core_warm_up_then_live_equals_one_continuous_run(rule):
    config = BrainConfig(rule=rule, capacity=8)
    ser = series()
    bars = ring_bars(ser)
    _, intents = decide_series(ser, config, None)
    # restart 17 minutes after a mid-run entry, so positions are open across it
    split = int(intents["decision_time_ms"][len(intents) // 2]) + 17 * 60_000
    cont = BrainCore(config, SYMBOLS)
    before = run_live(cont, bars[bars["open_time_ms"] < split])
    snapshot = (cont.book.equity, cont.book.positions())
    assert snapshot[1]  # positions are open across the restart
    after = run_live(cont, bars[bars["open_time_ms"] >= split])

    restarted = BrainCore(config, SYMBOLS)
    for s in ser:
        keep = s.open_time_ms < split
        restarted.warm_up(s.symbol_id, *(getattr(s, c)[keep] for c in
                          ("open_time_ms", "open", "high", "low", "close", "volume")))  # fmt: skip
    replay = restarted.finish_warm_up(None)
    assert len(replay.intents) == 0 and (replay.signals["decision"] == DECISION_REPLAYED).all()
    replayed_ids = set(replay.signals["intent_id"].tolist())
    assert replayed_ids <= set(concat(before, "signals")["intent_id"].tolist())
    # the account view is restored from what the executor persisted: here, the same book
    restarted.book.restore(*snapshot)
    live = run_live(restarted, bars[bars["open_time_ms"] >= split])
    assert_same_records(concat(live, "signals"), concat(after, "signals"))
    assert_same_records(concat(live, "intents"), concat(after, "intents"))
    a = [
        (int(x.decision_time_ms[i]), float(x.net_pct[i]))
        for x in (s.labels for s in after)
        for i in range(len(x))
    ]
    b = [
        (int(x.decision_time_ms[i]), float(x.net_pct[i]))
        for x in (s.labels for s in live)
        for i in range(len(x))
    ]
    assert a == b and len(a) > 0
    assert restarted.labeler.pending == cont.labeler.pending


def test_brain_core_bad_and_repeated_bars_are_dropped_and_counted_never_raised():
    config = BrainConfig(capacity=8)
    core = BrainCore(config, SYMBOLS)
    ser = series()
    bars = ring_bars(ser)[:300]
    core.on_bars(bars[:150], None)
    junk = bars[150:160].copy()
    junk["flags"][0] = 0  # an in-progress update
    junk["symbol_id"][1] = 999  # unknown symbol
    junk["close"][2] = np.nan
    junk["low"][3] = -1.0
    junk["open_time_ms"][4] += 7  # not minute aligned
    step = core.on_bars(np.concatenate([junk, bars[100:150]]), None)  # plus a re-delivery
    assert step.dropped == {"not_closed": 1, "unknown_symbol": 1, "bad_price": 2,
                            "misaligned": 1, "already_seen": 50}  # fmt: skip
    assert core.bars_seen == 150 + 5


def test_a_ring_batch_in_any_order_is_decided_minute_by_minute_and_copies_count_once():
    config = BrainConfig(rule=ema_crossover(10, 30), capacity=8)
    bars = ring_bars(series())
    in_order = run_live(BrainCore(config, SYMBOLS), bars)
    core = BrainCore(config, SYMBOLS)
    rng = np.random.default_rng(7)
    steps = []
    for chunk in np.array_split(bars, 40):  # ~175 minutes a batch, shuffled, one bar twice
        mixed = np.concatenate([chunk, chunk[3:4]])[rng.permutation(len(chunk) + 1)]
        steps.append(core.on_bars(mixed, None))
        assert steps[-1].dropped["already_seen"] == 1
    assert core.bars_seen == len(bars)
    assert_same_records(concat(steps, "signals"), concat(in_order, "signals"))
    assert_same_records(concat(steps, "intents"), concat(in_order, "intents"))


def test_shadow_labeler_and_exposure_book_reject_bad_input_with_clear_errors():
    from aegis.ml.shadow import ShadowLabeler
    from aegis.risk.exposure import ExposureBook

    labeler = ShadowLabeler(4, ExitRules(), 300_000)
    with pytest.raises(ValueError, match="out of range"):
        labeler.add(np.array([4]), np.array([0]), np.zeros((1, 12)))
    labeler.add(np.array([1]), np.array([0]), np.zeros((1, 12)))
    one = np.array([1.0, 1.0])
    with pytest.raises(ValueError, match="twice"):
        labeler.on_bars(np.array([1, 1]), np.array([300_000, 360_000]), one, one, one, one)
    assert labeler.pending == 1  # nothing was applied
    with pytest.raises(ValueError, match="equity"):
        ExposureBook(float("nan"), 1)


def test_brain_core_unregistered_symbol_warm_up_raises_and_capacity_is_enforced():
    from aegis.risk.brain_core import UnknownSymbolError

    core = BrainCore(BrainConfig(capacity=2), {1: "BTCUSDT"})
    with pytest.raises(UnknownSymbolError):
        core.warm_up(9, np.array([0]), *np.ones((5, 1)))
    core.add_symbol(2, "ETHUSDT")
    with pytest.raises(UnknownSymbolError, match="capacity"):
        core.add_symbol(3, "SOLUSDT")
    assert core.add_symbol(1, "BTCUSDT") == 0  # idempotent
